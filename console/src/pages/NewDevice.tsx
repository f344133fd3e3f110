/**
 * Onboarding: register a device of the tenant (an admin key) and show its credential once, with
 * a ready-to-run mosquitto_pub and curl line that publish a sample message of its class.
 */
import { useState } from "preact/hooks"
import { ApiError, request } from "../api"
import { Copyable, ErrorNote, Page, useAsync } from "../components/Common"
import { Link } from "../router"
import type { ClassDefinition, ClassSummary } from "../types"

interface Created {
  readonly id: string
  readonly class: string
  readonly credential: string
}

/** A message the class decodes: each field under its source name, with a value inside its bounds. */
export const samplePayload = (definition: ClassDefinition | undefined): string => {
  const message: Record<string, unknown> = {}
  if (definition?.message_id_field) message[definition.message_id_field] = "m-1"
  if (definition?.time_field) {
    const now = Date.now()
    message[definition.time_field] =
      definition.time_format === "epoch_ms"
        ? now
        : definition.time_format?.startsWith("epoch")
          ? Math.floor(now / 1000)
          : new Date(now).toISOString()
  }
  for (const [name, field] of Object.entries(definition?.fields ?? {})) {
    const low = typeof field.min === "number" ? field.min : 0
    const high = typeof field.max === "number" ? field.max : low + 100
    const mid = low + (high - low) / 4
    message[field.from ?? name] =
      field.type === "integer"
        ? Math.round(mid)
        : field.type === "number"
          ? Math.round(mid * 10) / 10
          : field.type === "boolean"
            ? true
            : "text"
  }
  return JSON.stringify(message)
}

const Commands = (props: { created: Created; definition: ClassDefinition | undefined }) => {
  const [mqtt, setMqtt] = useState(`${location.hostname}:1883`)
  const [ingest, setIngest] = useState(`http://${location.hostname}:8081`)
  const { id, credential } = props.created
  // Made once: the lines stay the same while the fields above them are edited.
  const [payload] = useState(() => samplePayload(props.definition))
  const [host, port = "1883"] = mqtt.split(":")
  const mosquitto =
    `mosquitto_pub -h ${host} -p ${port} -i ${id} -u ${id} -P '${credential}' -q 1 ` +
    `-t devices/${id}/telemetry -m '${payload}'`
  const curl =
    `curl -X POST ${ingest.replace(/\/$/, "")}/v1/telemetry -H 'Authorization: Bearer ${credential}' ` +
    `-H 'Content-Type: application/json' -d '${payload}'`
  return (
    <div class="secret" role="status" data-testid="created-device">
      <p>
        <strong>Device {id} is registered.</strong> Its credential is shown this once and stored only as a
        hash: copy it to the device now. It can connect within a second or two.
      </p>
      <Copyable label="Credential" value={credential} testId="credential" />
      <div class="range-fields">
        <label>
          MQTT broker (host:port)
          <input value={mqtt} onInput={(e) => setMqtt(e.currentTarget.value)} />
        </label>
        <label>
          HTTP ingest URL
          <input value={ingest} onInput={(e) => setIngest(e.currentTarget.value)} />
        </label>
      </div>
      <Copyable label="Publish over MQTT" value={mosquitto} testId="mosquitto-line" />
      <Copyable label="Publish over HTTP" value={curl} testId="curl-line" />
      <p>
        <Link href={`/devices/${encodeURIComponent(id)}`}>Open {id}</Link> to watch its readings arrive.
      </p>
    </div>
  )
}

export const NewDevicePage = () => {
  const classes = useAsync(
    () => request<{ deviceClasses: ReadonlyArray<ClassSummary> }>("GET", "/v1/device-classes"),
    [],
  )
  const [id, setId] = useState("")
  const [deviceClass, setDeviceClass] = useState("")
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<ApiError | undefined>(undefined)
  const [created, setCreated] = useState<Created | undefined>(undefined)
  const list = classes.data?.deviceClasses ?? []
  const chosen = deviceClass || list[0]?.name || ""

  return (
    <Page title="Add a device">
      <ErrorNote error={classes.error} retry={classes.reload} />
      <form
        class="stack"
        onSubmit={(e) => {
          e.preventDefault()
          if (id.trim() === "") {
            setError(
              new ApiError(400, "InvalidBody", "Enter the device's id: it is also its MQTT client id."),
            )
            return
          }
          setBusy(true)
          setError(undefined)
          setCreated(undefined)
          request<Created>("POST", "/v1/devices", { body: { id: id.trim(), class: chosen } }).then(
            (c) => {
              setBusy(false)
              setCreated(c)
              setId("")
            },
            (err: unknown) => {
              setBusy(false)
              setError(err instanceof ApiError ? err : new ApiError(0, "Error", String(err)))
            },
          )
        }}
      >
        <label>
          Device id
          <input
            name="id"
            value={id}
            onInput={(e) => setId(e.currentTarget.value)}
            autoComplete="off"
            spellcheck={false}
            aria-describedby="id-help"
          />
        </label>
        <p id="id-help" class="muted">
          Unique across the platform; the device uses it as its MQTT client id and username.
        </p>
        <label>
          Device class
          <select name="class" value={chosen} onChange={(e) => setDeviceClass(e.currentTarget.value)}>
            {list.map((c) => (
              <option key={c.name} value={c.name}>
                {c.name} {c.shared ? "(shared)" : ""}
              </option>
            ))}
          </select>
        </label>
        <ErrorNote error={error} />
        <div>
          <button type="submit" class="primary" disabled={busy || chosen === ""}>
            {busy ? "Creating…" : "Create device"}
          </button>
        </div>
      </form>
      {created && (
        <Commands created={created} definition={list.find((c) => c.name === created.class)?.definition} />
      )}
    </Page>
  )
}
