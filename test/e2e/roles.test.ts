/**
 * The tiers as separate processes (`npm start`'s default): real MQTT and HTTP clients against the
 * supervisor and its children, with children killed by SIGKILL while devices publish. Each test
 * asserts what a user is promised: every acknowledged message stored exactly once, ingestion
 * unaffected by a processor crash, devices back after an ingress crash.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import mqtt from "mqtt"
import { describe, expect, it } from "vitest"
import { byDevice, type Fleet, startFleet, storedIds } from "./fleet.js"
import {
  childPid,
  children,
  eventually,
  freePort,
  isReady,
  type Platform,
  startPlatform,
} from "./platform.js"

const root = fileURLToPath(new URL("../..", import.meta.url))

/** Every acknowledged id is stored, and none twice. */
const expectStoredOnce = async (platform: Platform, fleet: Fleet) => {
  for (const [deviceId, acked] of byDevice(fleet.acked)) {
    const stored = await eventually(
      () => storedIds(platform, deviceId),
      (ids) => acked.every((id) => ids.includes(id)),
    )
    expect(
      acked.filter((id) => !stored.includes(id)),
      `${deviceId}: acknowledged but not stored`,
    ).toEqual([])
    expect(stored.length, `${deviceId}: a message stored twice`).toBe(new Set(stored).size)
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Waits until the supervisor reports `name` running again under a new pid. */
const restarted = (platform: Platform, name: string, oldPid: number) =>
  eventually(
    () => children(platform).catch(() => []),
    (cs) => cs.some((c) => c.name === name && c.state === "running" && c.pid !== oldPid),
  )

describe("the tiers as processes", () => {
  it("stores every message from many devices exactly once, and reports each process", {
    timeout: 120_000,
  }, async () => {
    const platform = await startPlatform()
    try {
      const health = (await (await fetch(`${platform.httpUrl}/healthz`)).json()) as {
        roles: Array<string>
        supervisor: { children: Array<{ name: string; state: string; pid: number }> }
      }
      expect(health.roles).toEqual(["processor", "serving"])
      expect(health.supervisor.children.map((c) => [c.name, c.state])).toEqual([
        ["ingress", "running"],
        ["processor+serving", "running"],
      ])
      // Two processes, neither of them the supervisor.
      const pids = health.supervisor.children.map((c) => c.pid)
      expect(new Set([...pids, platform.pid]).size).toBe(3)
      const ingress = (await (await fetch(`${platform.ingestUrl}/healthz`)).json()) as {
        roles: Array<string>
      }
      expect(ingress.roles).toEqual(["ingress"])
      // Each process's metrics carry its role.
      expect(await (await fetch(`${platform.ingestUrl}/metrics`)).text()).toMatch(
        /process_cpu_user_seconds_total\{role="ingress"\}/,
      )
      expect(await (await fetch(`${platform.httpUrl}/metrics`)).text()).toContain('role="processor+serving"')

      const fleet = await startFleet(platform, { devices: 40, intervalMs: 20, ackTimeoutMs: 10_000 })
      await sleep(3_000)
      await fleet.stop()
      expect(fleet.failures).toEqual([])
      expect(fleet.acked.size).toBe(fleet.sent())
      expect(fleet.acked.size).toBeGreaterThan(3_000)
      await expectStoredOnce(platform, fleet)
      // The supervisor's scrape covers every process: ingress's acks and processor's stores together.
      const machine = await (await fetch(`${platform.supervisorUrl}/metrics`)).text()
      const value = (series: RegExp) => Number(machine.match(series)?.[1] ?? Number.NaN)
      expect(value(/sluice_ingested_messages_total\{transport="mqtt",role="ingress"\} (\d+)/)).toBe(
        fleet.acked.size,
      )
      expect(value(/sluice_stored_readings_total\{role="processor\+serving"\} (\d+)/)).toBe(fleet.acked.size)
      expect(await platform.stop()).toBe(0)
    } finally {
      await platform.kill().catch(() => {})
    }
  })

  it("keeps acknowledging while the processor is killed again and again, and stores everything once", {
    timeout: 180_000,
  }, async () => {
    const platform = await startPlatform()
    try {
      const fleet = await startFleet(platform, { devices: 20, intervalMs: 20, ackTimeoutMs: 2_000 })
      for (let kill = 0; kill < 3; kill++) {
        await sleep(1_500)
        const pid = await childPid(platform.ingestUrl, "processor+serving")
        process.kill(pid, "SIGKILL")
        await restarted(platform, "processor+serving", pid)
      }
      await sleep(1_000)
      await fleet.stop()
      // The stream absorbed every message while the processor was down: ingestion never noticed.
      expect(fleet.failures).toEqual([])
      expect(fleet.disconnects()).toBe(0)
      expect(fleet.acked.size).toBe(fleet.sent())
      const state = (await children(platform)).find((c) => c.name === "processor+serving")
      expect(state?.restarts).toBe(3)
      await expectStoredOnce(platform, fleet)
      expect(await platform.stop()).toBe(0)
    } finally {
      await platform.kill().catch(() => {})
    }
  })

  it("brings devices back after an ingress process is killed, and stores every acknowledged message once", {
    timeout: 180_000,
  }, async () => {
    const platform = await startPlatform({ args: ["--ingress-workers", "2"] })
    try {
      const fleet = await startFleet(platform, { devices: 20, intervalMs: 20, ackTimeoutMs: 15_000 })
      await sleep(1_500)
      const pid = await childPid(platform.httpUrl, "ingress-1")
      process.kill(pid, "SIGKILL")
      await restarted(platform, "ingress-1", pid)
      const before = fleet.acked.size
      // Devices publish again: those of the killed worker reconnected to the other one or its replacement.
      await eventually(
        async () => fleet.acked.size,
        (n) => n > before + 1_000,
      )
      await fleet.stop()
      expect(fleet.disconnects()).toBeGreaterThan(0)
      await expectStoredOnce(platform, fleet)
      expect(await platform.stop()).toBe(0)
    } finally {
      await platform.kill().catch(() => {})
    }
  })
})

/** Runs `sluice` with flags until it exits or `ms` pass; returns its exit code and output. */
const runSluice = (args: ReadonlyArray<string>, env: Record<string, string>, ms: number) =>
  new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    let output = ""
    child.stdout.on("data", (c: Buffer) => (output += c.toString()))
    child.stderr.on("data", (c: Buffer) => (output += c.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), ms)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })

describe("limits across ingress workers", () => {
  it("holds the MQTT connection limit for the workers of the machine together", {
    timeout: 90_000,
  }, async () => {
    const platform = await startPlatform({
      args: ["--ingress-workers", "2"],
      env: { SLUICE_INGRESS_MQTT_MAX_CONNECTIONS: "4" },
    })
    const clients: Array<mqtt.MqttClient> = []
    try {
      // Settled on CONNACK, an error, or the socket closing: mqtt.js's connectAsync never settles
      // when a listener at its limit closes the socket before the CONNECT is answered.
      const attempt = (i: number) =>
        new Promise<mqtt.MqttClient>((resolve, reject) => {
          const client = mqtt.connect(platform.mqttUrl, {
            username: "thermo-1",
            password: "thermo-1-secret",
            clientId: `limit-${i}`,
            reconnectPeriod: 0,
            connectTimeout: 5_000,
          })
          let settled = false
          const fail = (reason: string) => {
            if (settled) return
            settled = true
            clearTimeout(timer)
            client.end(true)
            reject(new Error(reason))
          }
          const timer = setTimeout(() => fail("no CONNACK in 10 s"), 10_000)
          client.once("connect", () => {
            if (settled) return
            settled = true
            clearTimeout(timer)
            resolve(client)
          })
          client.once("error", (e) => fail(e.message))
          client.once("close", () => fail("closed before CONNACK"))
        })
      const attempts = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => attempt(i)))
      for (const a of attempts) if (a.status === "fulfilled") clients.push(a.value)
      // Two workers with 2 each: never more than 4 together (fewer if the kernel sends a worker more than its share).
      expect(clients.length).toBeGreaterThanOrEqual(1)
      expect(clients.length).toBeLessThanOrEqual(4)
      expect(await platform.stop()).toBe(0)
    } finally {
      for (const c of clients) c.end(true)
      await platform.kill().catch(() => {})
    }
  })
})

describe("the supervisor at start", () => {
  it("stops everything with exit 1 when a child cannot come up (its port is taken), saying which", {
    timeout: 60_000,
  }, async () => {
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve))
    const httpPort = (taken.address() as net.AddressInfo).port
    try {
      const dataDir = mkdtempSync(join(tmpdir(), "sluice-port-taken-"))
      const { code, output } = await runSluice(
        [
          "--host",
          "127.0.0.1",
          "--mqtt-port",
          String(await freePort()),
          "--ingress-http-port",
          String(await freePort()),
          "--http-port",
          String(httpPort),
          "--supervisor-port",
          String(await freePort()),
        ],
        { SLUICE_DATA_DIR: dataDir },
        45_000,
      )
      expect(code, output).toBe(1)
      expect(output).toContain("processor+serving failed to start")
      expect(output).not.toContain("Sluice is running")
    } finally {
      taken.close()
    }
  })
})

describe("roles alone", () => {
  it("refuses --role serving alone with the embedded store, saying why and what to do", {
    timeout: 60_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-serving-alone-"))
    const { code, output } = await runSluice(
      ["--role", "serving", "--host", "127.0.0.1", "--http-port", String(await freePort())],
      { SLUICE_DATA_DIR: dataDir },
      30_000,
    )
    expect(code).toBe(1)
    expect(output).toContain("--role serving without the processor needs a ClickHouse server")
    expect(output).toContain("SLUICE_CLICKHOUSE_URL")
  })

  it("runs --role ingress alone without loading storage, chDB, the processor or the unused Kinesis backend", {
    timeout: 60_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-ingress-alone-"))
    const importLog = join(dataDir, "imports.txt")
    const [mqttPort, ingestPort] = [await freePort(), await freePort()]
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--import",
        "./test/support/recordImports.mjs",
        "src/main.ts",
        "--role",
        "ingress",
        "--host",
        "127.0.0.1",
        "--mqtt-port",
        String(mqttPort),
        "--ingress-http-port",
        String(ingestPort),
      ],
      {
        cwd: root,
        env: { ...process.env, SLUICE_DATA_DIR: dataDir, SLUICE_IMPORT_LOG: importLog },
        stdio: "pipe",
      },
    )
    let output = ""
    child.stdout.on("data", (c: Buffer) => (output += c.toString()))
    child.stderr.on("data", (c: Buffer) => (output += c.toString()))
    try {
      const ingestUrl = `http://127.0.0.1:${ingestPort}`
      const ready = await eventually(
        () => isReady(ingestUrl),
        (r) => r,
      )
      expect(ready).toBe(true)
      // It ingests: a device's POST is durably appended (202 with its position in the stream).
      const response = await fetch(`${ingestUrl}/v1/telemetry`, {
        method: "POST",
        headers: { authorization: "Bearer thermo-1-secret" },
        body: JSON.stringify({ id: "alone-1", temp_f: 70, humidity: 40 }),
      }).catch((error: Error) => {
        throw new Error(`${error.message}\n${output}`)
      })
      expect(response.status, output).toBe(202)
      const loaded = readFileSync(importLog, "utf8").split("\n")
      expect(loaded.some((url) => url.includes("/src/roles/Ingress.ts"))).toBe(true)
      expect(loaded.some((url) => url.includes("/src/ingress/MqttBroker.ts"))).toBe(true)
      const forbidden = loaded.filter((url) =>
        /\/src\/(storage|actors)\/|\/src\/serving\/(?!ServingConfig)|\/src\/roles\/(Processor|Serving)\.ts|node_modules\/(chdb|@clickhouse|@aws-sdk)\/|\/src\/stream\/Kinesis/.test(
          url,
        ),
      )
      expect(forbidden).toEqual([])
    } finally {
      child.kill("SIGTERM")
      await new Promise((r) => child.once("exit", r))
    }
  })
})
