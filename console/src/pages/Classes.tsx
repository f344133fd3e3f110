/**
 * Device classes: the shared ones (from the configuration file) and the tenant's own, each with
 * its fields and units; a class's page lists every version. An admin key creates a class or adds
 * a version by pasting its definition as JSON, as the configuration file would have it.
 */
import { useState } from "preact/hooks"
import { ApiError, request } from "../api"
import { ErrorNote, Page, useAsync } from "../components/Common"
import { Link, navigate } from "../router"
import type { ClassDefinition, ClassDetail, ClassSummary } from "../types"

const Fields = (props: { definition: ClassDefinition }) => (
  <ul class="fields">
    {Object.entries(props.definition.fields).map(([name, f]) => (
      <li key={name}>
        <code>{name}</code> {f.type}
        {f.unit ? ` in ${f.unit}` : ""}
        {f.from ? ` (from ${f.from})` : ""}
      </li>
    ))}
  </ul>
)

const example = JSON.stringify(
  {
    fields: { temperature: { type: "number", unit: "°C", min: -40, max: 85 } },
    time_field: "ts",
    time_format: "epoch_ms",
  },
  null,
  2,
)

/** A definition typed as JSON, posted to `path` (create: with the name). */
const DefinitionForm = (props: {
  title: string
  name?: boolean
  submit: (name: string, definition: unknown) => Promise<unknown>
}) => {
  const [name, setName] = useState("")
  const [text, setText] = useState(example)
  const [error, setError] = useState<ApiError | undefined>(undefined)
  const [done, setDone] = useState<string | undefined>(undefined)
  return (
    <form
      class="stack card"
      onSubmit={(e) => {
        e.preventDefault()
        setDone(undefined)
        let definition: unknown
        try {
          definition = JSON.parse(text)
        } catch (err) {
          setError(new ApiError(400, "InvalidBody", `The definition is not JSON: ${(err as Error).message}`))
          return
        }
        setError(undefined)
        props.submit(name.trim(), definition).then(
          () => setDone("Saved."),
          (err: unknown) => setError(err instanceof ApiError ? err : new ApiError(0, "Error", String(err))),
        )
      }}
    >
      <h2>{props.title}</h2>
      {props.name && (
        <label>
          Name
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
      )}
      <label>
        Definition (JSON: fields, and optionally time_field, time_format, message_id_field)
        <textarea rows={8} spellcheck={false} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </label>
      <ErrorNote error={error} />
      {done && <p role="status">{done}</p>}
      <div>
        <button type="submit">{props.title}</button>
      </div>
    </form>
  )
}

const ClassPage = (props: { name: string }) => {
  const detail = useAsync(
    () => request<ClassDetail>("GET", `/v1/device-classes/${encodeURIComponent(props.name)}`),
    [props.name],
  )
  return (
    <Page title={`Class ${props.name}`}>
      <p>
        <Link href="/classes">← All classes</Link>
      </p>
      <ErrorNote error={detail.error} retry={detail.reload} />
      {detail.data && (
        <>
          <p class="muted">
            {detail.data.shared
              ? "Shared: from the configuration file, usable by every tenant."
              : "This tenant's own class."}
          </p>
          {[...detail.data.versions].reverse().map((v, i) => (
            <section key={v.version} class="card">
              <h2>
                Version {v.version}
                {i === 0 ? " (current)" : ""}
              </h2>
              <Fields definition={v.definition} />
            </section>
          ))}
          {!detail.data.shared && (
            <DefinitionForm
              title="Add a version"
              submit={(_, definition) =>
                request("POST", `/v1/device-classes/${encodeURIComponent(props.name)}/versions`, {
                  body: { definition },
                }).then(detail.reload)
              }
            />
          )}
        </>
      )}
    </Page>
  )
}

export const ClassesPage = (props: { name: string | undefined }) => {
  const list = useAsync(
    () => request<{ deviceClasses: ReadonlyArray<ClassSummary> }>("GET", "/v1/device-classes"),
    [],
  )
  if (props.name !== undefined) return <ClassPage name={props.name} />
  return (
    <Page title="Device classes">
      <ErrorNote error={list.error} retry={list.reload} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Class</th>
              <th scope="col">Version</th>
              <th scope="col">Owner</th>
              <th scope="col">Fields</th>
            </tr>
          </thead>
          <tbody>
            {(list.data?.deviceClasses ?? []).map((c) => (
              <tr key={c.name}>
                <td>
                  <Link href={`/classes/${encodeURIComponent(c.name)}`}>{c.name}</Link>
                </td>
                <td>{c.version}</td>
                <td>{c.shared ? "shared" : "tenant"}</td>
                <td>
                  <Fields definition={c.definition} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <DefinitionForm
        title="Create a class"
        name
        submit={(name, definition) =>
          request("POST", "/v1/device-classes", { body: { name, definition } }).then(() =>
            navigate(`/classes/${encodeURIComponent(name)}`),
          )
        }
      />
    </Page>
  )
}
