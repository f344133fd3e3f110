/**
 * chDB behind ClickHouse's HTTP interface in a separate process (a test peer, not
 * clickhouse-server). It lets the store's `Server` target, `--role serving` alone and the live
 * tail across processes be tested on machines where no modern clickhouse-server can be installed.
 * Started by `clickhouseHttpPeer.ts`:
 *
 *   node --import tsx test/support/clickhouse-http-peer.ts --data-dir DIR [--port 0]
 *
 * It prints one line `{"port":N}` on stdout once listening on 127.0.0.1, and exits 0 on SIGTERM.
 *
 * How https://clickhouse.com/docs/interfaces/http maps onto chDB (enough for @clickhouse/client
 * 1.x as `src/storage` uses it; anything else is answered with an error, never silently ignored):
 * - `GET /ping`, and `GET /` without a query: `Ok.\n`.
 * - `GET|POST /?query=…` and/or a POST body: the statement is the `query` URL parameter, then a
 *   newline and the body when both are present (how the client sends `INSERT … FORMAT X` with its
 *   rows), else whichever is present. A body with `Content-Encoding: gzip` is decompressed.
 * - Every request runs in a chDB `Session` of its own on the process's one data directory (chDB
 *   binds one directory per process; sessions on it share the engine and its data), closed after
 *   the request: so settings are per request, as over HTTP, and never leak into another.
 * - Settings: any URL parameter that is not one of the interface's own (`query`, `query_id`,
 *   `database`, `default_format`, `param_*`, credentials, …) is a setting, run as
 *   `SET name = 'value'` before the statement in that session (e.g. `insert_deduplication_token`,
 *   on which the store's insert dedup depends). Settings that only mean something to the HTTP
 *   server (`wait_end_of_query`, `enable_http_compression`, `http_*`, `send_progress_in_http_headers`)
 *   are dropped; the response is never compressed.
 * - `param_NAME=value`: bound server-side with chDB's `queryBindAsync`. Over HTTP the value is in
 *   ClickHouse's Escaped text form and chDB escapes the strings it is given, so the value is
 *   unescaped first; right for scalar types (String, integers, floats, dates — all the store uses).
 *   Composite values (Array, Map, Tuple) are not supported faithfully.
 * - `database=NAME`: `USE NAME` in the request's session. `default_format`: the output format when
 *   the statement has no FORMAT clause (default TabSeparated, as the server).
 * - Response: 200 with the result bytes, `X-ClickHouse-Query-Id`, `X-ClickHouse-Summary` (JSON of
 *   read/written rows and bytes as chDB reports them), `X-ClickHouse-Format`. An error: a 4xx/5xx
 *   status (400 syntax, 404 unknown database/table, else 500), `X-ClickHouse-Exception-Code`, and
 *   the text body `Code: N. DB::Exception: …` that @clickhouse/client parses.
 * - Not supported: `session_id` (server-side sessions) and `role` (refused with 400), users and
 *   passwords (accepted, not checked), response compression, multipart query parameters, progress
 *   headers, streaming (results are buffered), cancellation (a query runs to completion).
 */

import { randomUUID } from "node:crypto"
import { mkdirSync } from "node:fs"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { gunzipSync } from "node:zlib"
import { Session } from "chdb"

const arg = (name: string) => {
  const i = process.argv.indexOf(name)
  return i === -1 ? undefined : process.argv[i + 1]
}
const dataDir = arg("--data-dir")
if (dataDir === undefined) {
  process.stderr.write("usage: clickhouse-http-peer --data-dir DIR [--port N]\n")
  process.exit(2)
}
const port = Number(arg("--port") ?? "0")
mkdirSync(dataDir, { recursive: true })

// Holds the engine bound to the directory for the life of the process; requests open their own.
const anchor = new Session(dataDir)

/** URL parameters of the interface itself, i.e. not settings. */
const interfaceParams = new Set([
  "query",
  "query_id",
  "database",
  "default_format",
  "user",
  "password",
  "quota_key",
  "compress",
  "decompress",
  "buffer_size",
])
/** Settings only the HTTP server acts on; chDB has nothing to apply them to. */
const httpOnlySetting = (name: string) =>
  name === "wait_end_of_query" ||
  name === "enable_http_compression" ||
  name === "send_progress_in_http_headers" ||
  name.startsWith("http_")

const identifier = /^[A-Za-z_][A-Za-z0-9_]*$/

/** Inverse of ClickHouse's Escaped text form (what a `param_*` value arrives in). */
const unescapeParam = (s: string): string | null => {
  if (s === "\\N") return null
  if (!s.includes("\\")) return s
  const map: Record<string, string> = {
    b: "\b",
    f: "\f",
    n: "\n",
    r: "\r",
    t: "\t",
    "0": "\0",
    a: "\x07",
    v: "\v",
  }
  let out = ""
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (c !== "\\" || i === s.length - 1) {
      out += c
      continue
    }
    const next = s[++i]!
    out += map[next] ?? next
  }
  return out
}

const quote = (value: string) => `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`

class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

const readBody = async (request: IncomingMessage) => {
  const chunks: Array<Buffer> = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  const body = Buffer.concat(chunks)
  const encoding = request.headers["content-encoding"]
  if (encoding === undefined || encoding === "identity") return body.toString("utf8")
  if (encoding === "gzip") return gunzipSync(body).toString("utf8")
  throw new RequestError(
    415,
    `Code: 1. DB::Exception: Content-Encoding ${encoding} is not supported by this test peer. (UNSUPPORTED_METHOD)`,
  )
}

const statusOf = (code: number | undefined) =>
  code === 62 ? 400 : code === 60 || code === 81 ? 404 : code === 516 ? 401 : 500

const handle = async (request: IncomingMessage, response: ServerResponse) => {
  const url = new URL(request.url ?? "/", "http://peer")
  const queryId = url.searchParams.get("query_id") ?? randomUUID()
  response.setHeader("X-ClickHouse-Query-Id", queryId)
  if (
    url.pathname === "/ping" ||
    (url.pathname === "/" && request.method === "GET" && !url.searchParams.has("query"))
  ) {
    response.writeHead(200, { "Content-Type": "text/plain; charset=UTF-8" }).end("Ok.\n")
    return
  }
  if (url.pathname !== "/" || (request.method !== "GET" && request.method !== "POST")) {
    throw new RequestError(
      404,
      `Code: 1. DB::Exception: ${request.method} ${url.pathname} is not served by this test peer. (UNSUPPORTED_METHOD)`,
    )
  }
  if (url.searchParams.has("session_id") || url.searchParams.has("role")) {
    throw new RequestError(
      400,
      "Code: 1. DB::Exception: session_id and role are not supported by this test peer. (UNSUPPORTED_METHOD)",
    )
  }
  if (request.headers["content-type"]?.startsWith("multipart/")) {
    throw new RequestError(
      400,
      "Code: 1. DB::Exception: multipart requests are not supported by this test peer. (UNSUPPORTED_METHOD)",
    )
  }
  const body = await readBody(request)
  const fromUrl = url.searchParams.get("query") ?? ""
  const sql = fromUrl !== "" && body !== "" ? `${fromUrl}\n${body}` : fromUrl || body
  if (sql.trim() === "") throw new RequestError(400, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")

  const setup: Array<string> = []
  const database = url.searchParams.get("database")
  if (database !== null && database !== "default") {
    if (!identifier.test(database))
      throw new RequestError(
        400,
        `Code: 81. DB::Exception: Bad database name ${database}. (UNKNOWN_DATABASE)`,
      )
    setup.push(`USE ${database}`)
  }
  const params: Record<string, string | null> = {}
  for (const [name, value] of url.searchParams) {
    if (name.startsWith("param_")) params[name.slice("param_".length)] = unescapeParam(value)
    else if (!interfaceParams.has(name) && !httpOnlySetting(name)) {
      if (!identifier.test(name))
        throw new RequestError(400, `Code: 115. DB::Exception: Unknown setting ${name}. (UNKNOWN_SETTING)`)
      setup.push(`SET ${name} = ${quote(value)}`)
    }
  }
  const format = url.searchParams.get("default_format") ?? "TabSeparated"

  // An INSERT … FORMAT X with no rows: the server accepts it as nothing to do; chDB's parser
  // would say "No data to insert".
  if (/^\s*INSERT\b[\s\S]*\bFORMAT\s+\w+\s*$/i.test(sql)) {
    response
      .writeHead(200, { "X-ClickHouse-Summary": summary({ written: 0, read: 0, bytes: 0, elapsed: 0 }) })
      .end()
    return
  }

  const session = new Session(dataDir)
  try {
    const statement = [...setup, sql].join(";\n")
    const result =
      Object.keys(params).length > 0
        ? await session.queryBindAsync(statement, params, { format })
        : await session.queryAsync(statement, { format })
    const isInsert = /^\s*INSERT\b/i.test(sql)
    const bytes = result.bytes()
    response
      .writeHead(200, {
        "Content-Type": "text/plain; charset=UTF-8",
        "X-ClickHouse-Format": format,
        "X-ClickHouse-Summary": summary({
          written: isInsert ? result.rowsRead : 0,
          read: result.rowsRead,
          bytes: result.bytesRead,
          elapsed: result.elapsed,
        }),
      })
      .end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
  } finally {
    session.close()
  }
}

const summary = (s: { written: number; read: number; bytes: number; elapsed: number }) =>
  JSON.stringify({
    read_rows: String(s.read),
    read_bytes: String(s.bytes),
    written_rows: String(s.written),
    written_bytes: String(s.written > 0 ? s.bytes : 0),
    total_rows_to_read: "0",
    result_rows: String(s.written > 0 ? 0 : s.read),
    result_bytes: "0",
    elapsed_ns: String(Math.round(s.elapsed * 1e9)),
  })

const server = createServer((request, response) => {
  handle(request, response).catch((error: unknown) => {
    const message = error instanceof Error ? error.message : String(error)
    const code =
      (error as { clickhouseCode?: number }).clickhouseCode ??
      Number(/^Code: (\d+)\./.exec(message)?.[1] ?? 1)
    const status = error instanceof RequestError ? error.status : statusOf(code)
    if (response.headersSent) return response.destroy()
    response
      .writeHead(status, {
        "Content-Type": "text/plain; charset=UTF-8",
        "X-ClickHouse-Exception-Code": String(code),
      })
      .end(`${message}\n`)
  })
})
// Like the server's default (keep_alive_timeout 10 s); the client reads it to retire idle sockets.
server.keepAliveTimeout = 10_000

server.listen(port, "127.0.0.1", () => {
  const address = server.address()
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === "object" && address ? address.port : port })}\n`,
  )
})

const shutdown = () => {
  server.close(() => {
    anchor.close()
    process.exit(0)
  })
  server.closeIdleConnections()
  setTimeout(() => server.closeAllConnections(), 5_000).unref()
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
