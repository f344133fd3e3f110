/** An operator's start page: the tenants and how many devices each has. */
import { request } from "../api"
import { ErrorNote, Page, useAsync } from "../components/Common"

interface Tenant {
  readonly id: string
  readonly max_messages_per_second?: number
  readonly source: "config" | "api"
  readonly devices: number
}

export const TenantsPage = () => {
  const tenants = useAsync(() => request<{ tenants: ReadonlyArray<Tenant> }>("GET", "/v1/tenants"), [])
  return (
    <Page title="Tenants">
      <p class="muted">
        An operator key manages tenants and their keys; a tenant's devices and data need one of the tenant's
        keys.
      </p>
      <ErrorNote error={tenants.error} retry={tenants.reload} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Tenant</th>
              <th scope="col">Devices</th>
              <th scope="col">Ingest quota</th>
              <th scope="col">Managed by</th>
            </tr>
          </thead>
          <tbody>
            {(tenants.data?.tenants ?? []).map((t) => (
              <tr key={t.id}>
                <td>{t.id}</td>
                <td>{t.devices.toLocaleString()}</td>
                <td>
                  {t.max_messages_per_second === undefined ? "none" : `${t.max_messages_per_second} msg/s`}
                </td>
                <td>{t.source === "config" ? "configuration file" : "API"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Page>
  )
}
