/** The Sluice HTTP API: the contract every handler implements and the OpenAPI document describes. */
import { HttpApi, OpenApi } from "@effect/platform"
import { HealthApi } from "../observability/HealthApi.js"
import { DeviceAdminApi, DeviceClassesApi, TenantsApi } from "./admin/Api.js"
import { CertificateAuthoritiesApi } from "./admin/Authorities.js"
import { ClaimsApi } from "./admin/Claims.js"
import { DeadLettersApi } from "./deadletters/Api.js"
import { DevicesApi } from "./devices/Api.js"
import { LiveApi } from "./live/Api.js"
import { OverviewApi } from "./overview/Api.js"
import { TelemetryApi } from "./telemetry/Api.js"

export class Api extends HttpApi.make("sluice")
  .add(DevicesApi)
  .add(DeviceAdminApi)
  .add(DeviceClassesApi)
  .add(TenantsApi)
  .add(CertificateAuthoritiesApi)
  .add(ClaimsApi)
  .add(TelemetryApi)
  .add(DeadLettersApi)
  .add(LiveApi)
  .add(OverviewApi)
  .add(HealthApi)
  .annotate(OpenApi.Title, "Sluice")
  .annotate(
    OpenApi.Description,
    "IoT telemetry. Every /v1 request carries an API key (`Authorization: Bearer <key>` or " +
      "`X-Api-Key`), and the key has a role. A tenant's `read` key reads the tenant's data (devices, " +
      "device history, aggregates, latest readings, dead letters, live readings, device classes); its " +
      "`admin` key reads the same and also manages the tenant's devices, device classes and keys " +
      "(a read key writing is answered 403). Every such request is scoped to the key's tenant: no " +
      "path names a tenant, and another tenant's device is answered exactly like a missing one. An " +
      "`operator` key manages tenants and their keys (`/v1/tenants`) and reads no tenant's data (401 " +
      "at the data endpoints, with that reason; 403 at the admin ones). A missing or unknown key is " +
      "401; a valid key of the wrong role at an admin endpoint is 403, naming the role needed. Devices post readings to the ingress " +
      "listener (port 8081 by default, its own reference at /docs there), not to this API.",
  )
  .annotate(OpenApi.Version, "0.1.0") {}
