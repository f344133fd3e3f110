/**
 * The supervisor's own listener: one place to scrape a whole machine. `/metrics` is every child's
 * registry, gathered over node:cluster's IPC channel by prom-client's AggregatorRegistry and
 * summed per series (each child's series carry its role, so ingress and processor+serving stay
 * apart; several ingress workers add up); `/healthz` is the supervisor's view of its children.
 * Each child's own `/metrics` stays: with `--ingress-workers N` > 1 a scrape of the shared ingest
 * port reaches one worker, this one reaches them all.
 */
import { createServer, type Server } from "node:http"
import { Config, Effect } from "effect"
import { AggregatorRegistry, type Registry } from "prom-client"
import type { ChildState } from "../observability/Health.js"

/** Where the supervisor listens (SLUICE_SUPERVISOR_PORT, `--supervisor-port`). Default 8082; 0 = a free port. */
export const port = Config.integer("port").pipe(
  Config.withDefault(8082),
  Config.validate({ message: "must be between 0 and 65535", validation: (n) => n >= 0 && n <= 65535 }),
  Config.nested("supervisor"),
  Config.nested("sluice"),
)

/** Connections the listener holds at once: it serves scrapes and probes, not traffic. */
const MAX_CONNECTIONS = 64

/** In a supervised child: answer the supervisor's requests for `registry`'s metrics. */
export const answerSupervisor = (registry: Registry) => {
  // Constructing one installs prom-client's IPC handler in this worker.
  new AggregatorRegistry()
  AggregatorRegistry.setRegistries([registry])
}

/** Serves `/metrics` and `/healthz` for the machine on `host:port` until the scope closes. */
export const serve = (options: {
  readonly host: string
  readonly port: number
  readonly children: () => ReadonlyArray<ChildState>
}) =>
  Effect.acquireRelease(
    Effect.async<Server, Error>((resume) => {
      const aggregator = new AggregatorRegistry()
      const server = createServer((request, response) => {
        if (request.method === "GET" && request.url === "/metrics") {
          aggregator.clusterMetrics().then(
            (text) => {
              response.writeHead(200, { "content-type": aggregator.contentType })
              response.end(text)
            },
            (error: Error) => {
              // A child that dies mid-scrape never answers; the next scrape will.
              response.writeHead(503, { "content-type": "text/plain" })
              response.end(`metrics unavailable: ${error.message}\n`)
            },
          )
        } else if (request.method === "GET" && request.url === "/healthz") {
          response.writeHead(200, { "content-type": "application/json" })
          response.end(JSON.stringify({ status: "ok", pid: process.pid, children: options.children() }))
        } else {
          response.writeHead(404, { "content-type": "text/plain" })
          response.end("not found: the supervisor serves /metrics and /healthz\n")
        }
      })
      server.maxConnections = MAX_CONNECTIONS
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(options.port, options.host, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => void server.close()),
  )
