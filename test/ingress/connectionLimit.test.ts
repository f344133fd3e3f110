/**
 * Connection limits: the derivation, refusals counted and logged (rate-limited), the MQTT broker
 * refusing real mqtt.js clients over its limit, and a broker under a low fd limit that cannot starve
 * the process's HTTP listener.
 */
import { type ChildProcess, spawn } from "node:child_process"
import http from "node:http"
import net from "node:net"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Schedule } from "effect"
import mqtt, { type IClientOptions } from "mqtt"
import { BASE_RESERVE_FDS, derive, type LimitInputs } from "../../src/ingress/ConnectionLimit.js"
import * as MqttBroker from "../../src/ingress/MqttBroker.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { fileDescriptorLimit, guard } from "../../src/platform/ConnectionGuard.js"
import { counter, dependencies, device1, device2, device3, ingressConfig } from "./harness.js"

const REFUSED = "sluice_refused_connections_total"

const inputs: LimitInputs = {
  machineMaxConnections: 10_000,
  workers: 1,
  fdLimit: 1_048_576,
  httpMaxConnections: 1024,
  openFileDescriptors: 40,
}

describe("derive", () => {
  it("gives one worker the configured limit when descriptors are plenty", () => {
    const limit = derive(inputs)
    expect(limit.perWorker).toBe(10_000)
    expect(limit.reserve).toBe(1024 + 40 + BASE_RESERVE_FDS)
    expect(limit.fdBound).toBe(false)
  })

  it("splits the machine's limit between the workers, rounding down", () => {
    expect(derive({ ...inputs, workers: 4 }).perWorker).toBe(2_500)
    expect(derive({ ...inputs, workers: 3 }).perWorker * 3).toBeLessThanOrEqual(10_000)
    expect(derive({ ...inputs, workers: 3 }).perWorker).toBe(3_333)
  })

  it("lowers the limit to what the fd limit leaves after the reserve", () => {
    const limit = derive({ ...inputs, fdLimit: 4096 })
    expect(limit.perWorker).toBe(4096 - (1024 + 40 + BASE_RESERVE_FDS))
    expect(limit.perWorker + limit.reserve).toBe(4096)
    expect(limit.fdBound).toBe(true)
    // The fd limit is per process: each of 4 workers gets the smaller of its share and its room.
    expect(derive({ ...inputs, workers: 4, fdLimit: 4096 }).perWorker).toBe(2_500)
    expect(derive({ ...inputs, workers: 2, fdLimit: 4096 }).perWorker).toBe(limit.perWorker)
  })

  it("reserves the HTTP listeners' connections, and a base even when nothing is open yet", () => {
    const few = derive({ ...inputs, fdLimit: 2048, httpMaxConnections: 16, openFileDescriptors: undefined })
    expect(few.perWorker).toBe(2048 - 16 - BASE_RESERVE_FDS)
    const many = derive({
      ...inputs,
      fdLimit: 2048,
      httpMaxConnections: 1024,
      openFileDescriptors: undefined,
    })
    expect(few.perWorker - many.perWorker).toBe(1024 - 16)
  })

  it("is never below 1", () => {
    expect(derive({ ...inputs, fdLimit: 256 }).perWorker).toBe(1)
    expect(derive({ ...inputs, machineMaxConnections: 3, workers: 8 }).perWorker).toBe(1)
  })

  it("has no fd bound where the fd limit is unknown", () => {
    expect(derive({ ...inputs, fdLimit: undefined }).perWorker).toBe(10_000)
  })

  it("reads this process's fd limit", () => {
    const limit = fileDescriptorLimit()
    if (process.platform === "linux") expect(limit).toBeGreaterThan(0)
  })
})

/** Log lines written while `effect` runs, as messages with their annotations. */
const capturingLogs = () => {
  const lines: Array<{ message: string; annotations: Record<string, unknown> }> = []
  const logger = Logger.make(({ message, annotations }) => {
    lines.push({
      message: String(Array.isArray(message) ? message.join(" ") : message),
      annotations: Object.fromEntries(annotations),
    })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const listen = (server: net.Server) =>
  Effect.acquireRelease(
    Effect.async<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }),
    () => Effect.sync(() => server.close()),
  )

/** A raw TCP connection, destroyed with the scope; resolves once connected. */
const rawConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.async<net.Socket>((resume) => {
      const socket = net.connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
      socket.on("error", () => {})
    }),
    (socket) => Effect.sync(() => socket.destroy()),
  )

/** Whether the server closed a connected socket (end or reset) within a second. */
const closedByServer = (socket: net.Socket) =>
  Effect.async<boolean>((resume) => {
    if (socket.destroyed) return resume(Effect.succeed(true))
    socket.once("close", () => resume(Effect.succeed(true)))
    socket.resume()
  }).pipe(Effect.timeoutTo({ duration: "1 second", onTimeout: () => false, onSuccess: (closed) => closed }))

describe("guard", () => {
  it.scopedLive(
    "refuses past maxConnections, counts each, and logs a line per interval with the count",
    () => {
      const logs = capturingLogs()
      return Effect.gen(function* () {
        const server = net.createServer()
        const held: Array<net.Socket> = []
        server.on("connection", (socket) => held.push(socket))
        yield* guard(server, { listener: "test", maxConnections: 1, logIntervalMs: 500 })
        const port = yield* listen(server)
        expect(yield* closedByServer(yield* rawConnection(port))).toBe(false)
        for (let i = 0; i < 5; i++) expect(yield* closedByServer(yield* rawConnection(port))).toBe(true)
        expect(yield* counter(REFUSED, { listener: "test", reason: "limit" })).toBe(5)
        // The first refusal is said at once, the next four wait for the interval, in one line.
        const refusalLines = () => logs.lines.filter((line) => line.message.includes("test listener refused"))
        expect(refusalLines().map((line) => line.message)).toEqual([
          "test listener refused 1 connection(s): 1 at its limit of 1",
        ])
        yield* Effect.sleep("700 millis")
        expect(refusalLines().map((line) => line.message)).toEqual([
          "test listener refused 1 connection(s): 1 at its limit of 1",
          "test listener refused 4 connection(s): 4 at its limit of 1",
        ])
        expect(refusalLines()[1]!.annotations).toMatchObject({ limit: 4, fd_exhausted: 0, accept_error: 0 })
        for (const socket of held) socket.destroy()
      }).pipe(Effect.provide(Metrics.layer), Effect.provide(logs.layer))
    },
  )

  it.scopedLive("counts the accept errors Node reports, EMFILE as fd_exhausted, and keeps listening", () =>
    Effect.gen(function* () {
      const server = net.createServer()
      server.on("connection", (socket) => socket.end())
      yield* guard(server, { listener: "test", maxConnections: 10, logIntervalMs: 60_000 })
      const port = yield* listen(server)
      // What net.Server's onconnection emits when libuv reports an accept failure; provoking a
      // real one needs libuv's spare descriptor gone, which no test can arrange reliably.
      const acceptError = (code: string) =>
        Object.assign(new Error(`accept ${code}`), { code, errno: -24, syscall: "accept" })
      server.emit("error", acceptError("EMFILE"))
      server.emit("error", acceptError("ENFILE"))
      server.emit("error", acceptError("ENOBUFS"))
      expect(yield* counter(REFUSED, { listener: "test", reason: "fd_exhausted" })).toBe(2)
      expect(yield* counter(REFUSED, { listener: "test", reason: "accept_error" })).toBe(1)
      expect(server.listening).toBe(true)
      expect(yield* closedByServer(yield* rawConnection(port))).toBe(true)
    }).pipe(Effect.provide(Metrics.layer)),
  )
})

/** Whether mqtt.js gets a CONNACK, or the connection closes first. */
const mqttOutcome = (port: number, options: IClientOptions) =>
  Effect.promise(() =>
    mqtt
      .connectAsync(
        `mqtt://127.0.0.1:${port}`,
        { reconnectPeriod: 0, connectTimeout: 5_000, ...options },
        // Without retries a close before CONNACK rejects instead of waiting for a reconnect.
        false,
      )
      .then(
        (client) => ({ outcome: "connected" as const, client }),
        () => ({ outcome: "refused" as const, client: undefined }),
      ),
  )

const asDevice = (device: { id: string; credential: string }): IClientOptions => ({
  username: device.id,
  password: device.credential,
})

describe("MQTT connection limit", () => {
  it.scopedLive("refuses mqtt.js clients past the limit, counts them, and admits again once one leaves", () =>
    Effect.gen(function* () {
      const { port } = yield* MqttBroker.make({ ...ingressConfig, mqttMaxConnections: 2 })
      const first = yield* mqttOutcome(port, asDevice(device1))
      const second = yield* mqttOutcome(port, asDevice(device2))
      expect([first.outcome, second.outcome]).toEqual(["connected", "connected"])
      for (let i = 0; i < 3; i++)
        expect((yield* mqttOutcome(port, asDevice(device3))).outcome).toBe("refused")
      expect(yield* counter(REFUSED, { listener: "mqtt", reason: "limit" })).toBe(3)
      yield* Effect.promise(() => first.client!.endAsync(true))
      // The broker sees the close a moment later; until then it is still full.
      const again = yield* mqttOutcome(port, asDevice(device3)).pipe(
        Effect.filterOrFail((result) => result.outcome === "connected"),
        Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("3 seconds"))),
      )
      yield* Effect.promise(() => Promise.all([second.client!.endAsync(true), again.client!.endAsync(true)]))
    }).pipe(Effect.provide(dependencies())),
  )
})

const FD_LIMIT = 256
/** Twice what the process could hold even if it held nothing else. */
const FLOOD = 2 * FD_LIMIT
const fixture = fileURLToPath(new URL("./fixtures/fdStarvation.ts", import.meta.url))
const repositoryRoot = fileURLToPath(new URL("../..", import.meta.url))

interface Ready {
  readonly mqttPort: number
  readonly httpPort: number
  readonly fdLimit: number | undefined
}

/** The fixture under `ulimit -n FD_LIMIT`, killed with the scope; resolves once it listens. */
const startFixture = Effect.acquireRelease(
  Effect.async<{ child: ChildProcess; ready: Ready; output: () => string }, Error>((resume) => {
    const child = spawn(
      "bash",
      ["-c", `ulimit -n ${FD_LIMIT} && exec "${process.execPath}" --import tsx "${fixture}"`],
      { cwd: repositoryRoot, stdio: ["pipe", "pipe", "pipe"] },
    )
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      const line = output.split("\n").find((l) => l.startsWith("READY "))
      if (line !== undefined) {
        child.stdout!.off("data", onData)
        child.stdout!.on("data", (more: Buffer) => {
          output += more.toString("utf8")
        })
        resume(Effect.succeed({ child, ready: JSON.parse(line.slice(6)) as Ready, output: () => output }))
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
    })
    child.once("exit", (code) => resume(Effect.fail(new Error(`fixture exited with ${code}:\n${output}`))))
  }).pipe(
    Effect.timeoutFail({ duration: "15 seconds", onTimeout: () => new Error("fixture did not start") }),
  ),
  ({ child }) =>
    Effect.async<void>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
      const kill = setTimeout(() => child.kill("SIGKILL"), 5_000)
      child.once("exit", () => {
        clearTimeout(kill)
        resume(Effect.void)
      })
      child.kill("SIGTERM")
    }),
)

/** GET /metrics on a fresh connection: status and body, or the error that stopped it. */
const getMetrics = (port: number) =>
  Effect.async<{ status: number; body: string }, Error>((resume) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/metrics", agent: false }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        body += chunk
      })
      response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, body })))
    })
    request.on("error", (error) => resume(Effect.fail(error)))
  }).pipe(
    Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("/metrics did not answer") }),
  )

/** A sample's value from the exposition text: the series of `name` carrying every one of `labels`. */
const sample = (body: string, name: string, labels: Record<string, string>) => {
  const line = body
    .split("\n")
    .find(
      (l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)),
    )
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

describe("fd starvation", () => {
  it.scopedLive(
    `a broker under ulimit -n ${FD_LIMIT} flooded with ${FLOOD} connections keeps /metrics answering`,
    () =>
      Effect.gen(function* () {
        const { ready, output } = yield* startFixture
        expect(ready.fdLimit).toBe(FD_LIMIT)
        expect((yield* getMetrics(ready.httpPort)).status).toBe(200)

        // Opened from this process (its own fd limit is not the fixture's); held until the end.
        const sockets: Array<net.Socket> = []
        let closed = 0
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            for (const socket of sockets) socket.destroy()
          }),
        )
        for (let i = 0; i < FLOOD; i++) {
          const socket = net.connect(ready.mqttPort, "127.0.0.1")
          socket.on("error", () => {})
          socket.on("close", () => {
            closed += 1
          })
          sockets.push(socket)
        }

        // Every connection the fixture could not have held is refused at the limit — counted, not
        // lost to EMFILE — and every refused one is one the clients saw closed.
        let last = "no answer yet"
        const refused = yield* getMetrics(ready.httpPort).pipe(
          Effect.tapError((error) =>
            Effect.sync(() => {
              last = error.message
            }),
          ),
          Effect.map(({ body }) => sample(body, REFUSED, { listener: "mqtt", reason: "limit" })),
          Effect.tap((n) =>
            Effect.sync(() => {
              last = `${n} refusals counted`
            }),
          ),
          Effect.filterOrFail((n) => n >= FLOOD - FD_LIMIT && n === closed),
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("8 seconds"))),
          Effect.catchAll(() =>
            Effect.fail(new Error(`${last}; clients saw ${closed} of ${FLOOD} closed\n${output()}`)),
          ),
        )
        expect(FLOOD - refused).toBeLessThan(FD_LIMIT)
        expect(output()).toContain("mqtt listener refused")

        // With MQTT full, HTTP still has its descriptors, request after request.
        for (let i = 0; i < 5; i++) {
          const { status, body } = yield* getMetrics(ready.httpPort)
          expect(status).toBe(200)
          expect(sample(body, REFUSED, { listener: "mqtt", reason: "limit" })).toBe(refused)
          expect(sample(body, REFUSED, { listener: "http", reason: "limit" })).toBe(0)
          expect(sample(body, REFUSED, { listener: "mqtt", reason: "fd_exhausted" })).toBe(0)
        }
        // Still holding FLOOD - refused connections, none of them closed behind our back.
        expect(sockets.filter((s) => !s.destroyed).length).toBe(FLOOD - refused)
      }),
    20_000,
  )
})
