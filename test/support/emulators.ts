/**
 * Local AWS emulators for integration tests: Kinesis (kinesis-mock, kinesalite) and DynamoDB
 * (dynalite, for the shard lease table).
 *
 * Each emulator runs as a child process rather than in the test worker: kinesalite, for one, throws
 * from a LevelDB callback on some malformed requests (e.g. ListShards with only a NextToken) and
 * would take the vitest worker down with it. A child that dies only fails the calls made to it.
 *
 * Both emulators are driven over plain HTTP. The AWS SDK v3 Kinesis client speaks
 * `application/x-amz-json-1.1` (never CBOR), which both emulators accept.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createRequire } from "node:module"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import { DynamoDBClient, ListTablesCommand } from "@aws-sdk/client-dynamodb"
import { KinesisClient, ListStreamsCommand } from "@aws-sdk/client-kinesis"
import { NodeHttpHandler } from "@smithy/node-http-handler"

export interface Emulator<Name extends string = string> {
  readonly name: Name
  readonly endpoint: string
  readonly stop: () => Promise<void>
}

export type KinesisEmulator = Emulator<"kinesis-mock" | "kinesalite">
export type DynamoEmulator = Emulator<"dynalite">

const HOST = "127.0.0.1"
const READY_TIMEOUT_MS = 30_000
const READY_POLL_MS = 100
const STOP_GRACE_MS = 5_000
/** Keep only the tail of the emulator's output: enough to explain a failed start, bounded in memory. */
const OUTPUT_TAIL_CHARS = 8_192
/**
 * Both emulators cap the number of open shards per account (kinesis-mock 50, kinesalite 10) and
 * count every stream in the process. Tests share one emulator across many 4-shard streams, so the
 * defaults would surface as LimitExceededException after a handful of tests.
 */
const SHARD_LIMIT = 10_000

const require = createRequire(import.meta.url)

/** Fake, static credentials: the emulators accept any signature, but the SDK insists on signing. */
const FAKE_CREDENTIALS = { accessKeyId: "AKIAEMULATOR00000000", secretAccessKey: "emulator-secret" }

/** A Kinesis client for an emulator endpoint: plain HTTP/1.1, fixed region, fake credentials. */
export const kinesisClientFor = (endpoint: string): KinesisClient =>
  new KinesisClient({
    endpoint,
    region: "us-east-1",
    credentials: FAKE_CREDENTIALS,
    requestHandler: new NodeHttpHandler({ connectionTimeout: 2_000, requestTimeout: 10_000 }),
  })

/**
 * Reserves `count` distinct free loopback ports. All listeners stay open until every port is known,
 * so the kernel cannot hand the same port out twice; the ports are free again once this resolves.
 */
const freePorts = async (count: number): Promise<ReadonlyArray<number>> => {
  const servers: Array<net.Server> = []
  try {
    const ports: Array<number> = []
    for (let i = 0; i < count; i++) {
      const server = net.createServer()
      servers.push(server)
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject)
        server.listen(0, HOST, () => resolve())
      })
      const address = server.address()
      if (address === null || typeof address === "string") throw new Error("expected a TCP address")
      ports.push(address.port)
    }
    return ports
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  }
}

/** Children still running; killed synchronously if the test process exits without stopping them. */
const liveChildren = new Set<ChildProcess>()
process.once("exit", () => {
  for (const child of liveChildren) child.kill("SIGKILL")
})

/** One real API call against a starting emulator, and how to dispose of its client. */
interface Probe {
  readonly call: () => Promise<unknown>
  readonly close: () => void
}

interface SpawnSpec<Name extends string> {
  readonly name: Name
  readonly script: string
  readonly args: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
  readonly port: number
  /** Defaults to a Kinesis ListStreams call. */
  readonly probe?: (endpoint: string) => Probe
}

// One attempt per poll and short timeouts: the poll loop itself is the retry.
const probeHandler = () => new NodeHttpHandler({ connectionTimeout: 1_000, requestTimeout: 2_000 })

const listStreamsProbe = (endpoint: string): Probe => {
  const client = new KinesisClient({
    endpoint,
    region: "us-east-1",
    credentials: FAKE_CREDENTIALS,
    maxAttempts: 1,
    requestHandler: probeHandler(),
  })
  return { call: () => client.send(new ListStreamsCommand({})), close: () => client.destroy() }
}

const listTablesProbe = (endpoint: string): Probe => {
  const client = new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: FAKE_CREDENTIALS,
    maxAttempts: 1,
    requestHandler: probeHandler(),
  })
  return { call: () => client.send(new ListTablesCommand({})), close: () => client.destroy() }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const exitDescription = (code: number | null, signal: NodeJS.Signals | null): string =>
  signal !== null ? `signal ${signal}` : `code ${String(code)}`

/**
 * Starts `node <script> <args>` and resolves once the emulator answers a real API call (ListStreams
 * unless told otherwise): a listening socket alone is not enough, kinesis-mock accepts connections
 * before it can serve.
 */
const startEmulator = async <Name extends string>(spec: SpawnSpec<Name>): Promise<Emulator<Name>> => {
  const endpoint = `http://${HOST}:${spec.port}`
  const child = spawn(process.execPath, [spec.script, ...spec.args], {
    // A temp cwd: nothing the emulator might write (or read back) can land in the repository.
    cwd: os.tmpdir(),
    env: { ...process.env, ...spec.env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  liveChildren.add(child)

  // Output must be drained or a chatty emulator blocks on a full pipe; the tail explains failures.
  let output = ""
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString("utf8")).slice(-OUTPUT_TAIL_CHARS)
  }
  child.stdout?.on("data", collect)
  child.stderr?.on("data", collect)

  let exitInfo: string | undefined
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exitInfo = exitDescription(code, signal)
      liveChildren.delete(child)
      resolve()
    })
  })
  // A spawn failure (e.g. ENOENT) emits "error" and possibly no "exit".
  child.once("error", (error) => {
    exitInfo ??= `spawn error: ${error.message}`
    liveChildren.delete(child)
  })

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exitInfo !== undefined || child.exitCode !== null || child.signalCode !== null) return
      child.kill("SIGTERM")
      const graceful = await Promise.race([exited.then(() => true), sleep(STOP_GRACE_MS).then(() => false)])
      if (!graceful) {
        child.kill("SIGKILL")
        await exited
      }
    })()
    return stopping
  }

  const probe = (spec.probe ?? listStreamsProbe)(endpoint)
  const deadline = Date.now() + READY_TIMEOUT_MS
  let lastError: unknown
  try {
    while (Date.now() < deadline) {
      if (exitInfo !== undefined) {
        throw new Error(`${spec.name} exited during startup (${exitInfo}):\n${output}`)
      }
      try {
        await probe.call()
        return { name: spec.name, endpoint, stop }
      } catch (error) {
        lastError = error
        await sleep(READY_POLL_MS)
      }
    }
    const reason = lastError instanceof Error ? `${lastError.name}: ${lastError.message}` : String(lastError)
    throw new Error(
      `${spec.name} did not answer its readiness probe within ${READY_TIMEOUT_MS} ms (${reason}):\n${output}`,
    )
  } catch (error) {
    await stop()
    throw error
  } finally {
    probe.close()
  }
}

/**
 * kinesis-mock (Scala.js build, npm `kinesis-local`). It always opens a TLS listener too, so it gets
 * its own free port; we only use the plain one.
 */
export const startKinesisMock = async (): Promise<KinesisEmulator> => {
  const script = require.resolve("kinesis-local/main.js")
  const [plainPort, tlsPort] = await freePorts(2)
  if (plainPort === undefined || tlsPort === undefined) throw new Error("could not reserve ports")
  const immediate = "0ms"
  return startEmulator({
    name: "kinesis-mock",
    script,
    args: [],
    port: plainPort,
    env: {
      KINESIS_MOCK_PLAIN_PORT: String(plainPort),
      KINESIS_MOCK_TLS_PORT: String(tlsPort),
      // The TLS listener reads its certificate from "server.json" relative to the cwd unless told
      // otherwise, and startup fails with ENOENT outside the package directory.
      KINESIS_MOCK_CERT_PATH: path.join(path.dirname(script), "server.json"),
      // State transitions default to 500 ms each; tests would spend most of their time waiting.
      CREATE_STREAM_DURATION: immediate,
      DELETE_STREAM_DURATION: immediate,
      SPLIT_SHARD_DURATION: immediate,
      MERGE_SHARDS_DURATION: immediate,
      UPDATE_SHARD_COUNT_DURATION: immediate,
      UPDATE_STREAM_MODE_DURATION: immediate,
      REGISTER_STREAM_CONSUMER_DURATION: immediate,
      DEREGISTER_STREAM_CONSUMER_DURATION: immediate,
      START_STREAM_ENCRYPTION_DURATION: immediate,
      STOP_STREAM_ENCRYPTION_DURATION: immediate,
      SHARD_LIMIT: String(SHARD_LIMIT),
      // Purely in-memory: never read a stale data/kinesis-data.json nor write one.
      SHOULD_PERSIST_DATA: "false",
      LOAD_DATA_IF_EXISTS: "false",
      AWS_REGION: "us-east-1",
      LOG_LEVEL: "WARN",
    },
  })
}

/** kinesalite: in-memory (memdown) unless `--path` is given, which we never do. */
export const startKinesalite = async (): Promise<KinesisEmulator> => {
  const script = require.resolve("kinesalite/cli.js")
  const [port] = await freePorts(1)
  if (port === undefined) throw new Error("could not reserve a port")
  return startEmulator({
    name: "kinesalite",
    script,
    args: [
      "--port",
      String(port),
      // CREATING / UPDATING / DELETING last 500 ms by default; 0 still passes through the state.
      "--createStreamMs",
      "0",
      "--deleteStreamMs",
      "0",
      "--updateStreamMs",
      "0",
      "--shardLimit",
      String(SHARD_LIMIT),
    ],
    port,
    env: { AWS_REGION: "us-east-1" },
  })
}

/** dynalite (DynamoDB on LevelDB): in-memory unless `--path` is given, which we never do. */
export const startDynalite = async (): Promise<DynamoEmulator> => {
  const script = require.resolve("dynalite/cli.js")
  const [port] = await freePorts(1)
  if (port === undefined) throw new Error("could not reserve a port")
  return startEmulator({
    name: "dynalite",
    script,
    args: [
      "--host",
      HOST,
      "--port",
      String(port),
      // CREATING / DELETING / UPDATING last 500 ms by default; 0 still passes through the state.
      "--createTableMs",
      "0",
      "--deleteTableMs",
      "0",
      "--updateTableMs",
      "0",
    ],
    port,
    env: { AWS_REGION: "us-east-1" },
    probe: listTablesProbe,
  })
}

/** s3rver's one account (its access key must be known; signatures are not checked). */
export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }

export type S3Emulator = Emulator<"s3rver"> & {
  /** Where s3rver keeps the buckets' files (a temp directory of its own). */
  readonly directory: string
}

/**
 * s3rver (npm `s3rver`): an S3-compatible server over files, for the shared tenant spill. Listens
 * on 127.0.0.1 on a free port and keeps its files in a fresh temp directory (removed on stop).
 * It knows one account, `S3RVER_CREDENTIALS`, and does not check signatures; path-style addressing
 * only (the endpoint is an IP). Tests create their buckets through the API.
 *
 * Listing order: s3rver walks a bucket's directories in readdir order, which Node returns sorted
 * by bytes, so keys come back in the byte order of their files' names (`<key>._S3rver_object`).
 * That is S3's key order whenever no key is a prefix of a sibling key, as with the spill's
 * fixed-length keys; S3 itself guarantees it for all keys.
 */
export const startS3rver = async (): Promise<S3Emulator> => {
  const script = require.resolve("s3rver/bin/s3rver.js")
  const [port] = await freePorts(1)
  if (port === undefined) throw new Error("could not reserve a port")
  const { mkdtemp, rm } = await import("node:fs/promises")
  const directory = await mkdtemp(path.join(os.tmpdir(), "sluice-s3rver-"))
  try {
    const emulator = await startEmulator({
      name: "s3rver",
      script,
      args: [
        "--directory",
        directory,
        "--address",
        HOST,
        "--port",
        String(port),
        "--silent",
        "--allow-mismatched-signatures",
      ],
      port,
      // s3rver's continuation tokens are DES-encrypted, which OpenSSL 3 only has in its legacy provider.
      env: {
        NODE_OPTIONS: [process.env.NODE_OPTIONS, "--openssl-legacy-provider"].filter(Boolean).join(" "),
      },
      // Any HTTP answer to GET / (ListBuckets) means the server routes requests.
      probe: (endpoint) => ({
        call: () =>
          fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.arrayBuffer()),
        close: () => {},
      }),
    })
    return {
      ...emulator,
      directory,
      stop: async () => {
        await emulator.stop()
        await rm(directory, { recursive: true, force: true })
      },
    }
  } catch (error) {
    await rm(directory, { recursive: true, force: true })
    throw error
  }
}
