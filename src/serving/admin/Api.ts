/**
 * The admin API: tenants and their keys (operator), a tenant's devices and device classes (the
 * tenant's admin key). Every write goes to the device registry (`src/tenancy/Registry.ts`) and is
 * live in every process within the registry poll interval (1 s by default).
 *
 * Request bodies are decoded by the handlers (`Http.ts`), with the schemas declared here, so that
 * every refusal names its field: 400 `InvalidBody` with `problems: [{ field, reason }]`.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { StorageUnavailable } from "../../storage/TelemetryStore.js"
import { DeviceClassConfig, DeviceConfig, RetentionDays, TenantConfig } from "../../tenancy/PlatformConfig.js"
import {
  ApiKeyNotFound,
  BodyTooLarge,
  BulkRefused,
  Conflict,
  DeviceClassNotFound,
  DeviceNotFound,
  Forbidden,
  InvalidBody,
  RegistryUnavailable,
  storageUnavailableStatus,
  TenantNotFound,
} from "../ApiError.js"
import { AdminAuthentication } from "../Authentication.js"

/** Who manages a row: `config` (the configuration file) or `api` (this API). */
const Source = Schema.Literal("config", "api").annotations({
  description:
    "`config`: from the configuration file (`sluice apply`, `--config`); `api`: created through this API",
})

/** Ids of tenants, devices and classes: as in the configuration file. */
const Id = DeviceConfig.fields.id

/** The most seconds a rotated-out credential may keep working: 30 days. */
export const MAX_GRACE_SECONDS = 30 * 24 * 3600
export const DEFAULT_GRACE_SECONDS = 3600

// Bodies.

const rawRetention =
  "Days raw readings and dead letters are kept, by device time; absent = forever. Whole months are " +
  "dropped, so data goes up to a month after it expires"
const rollupRetention = "Days the rollups are kept; absent = forever. At least raw_retention_days"

export const CreateTenant = Schema.Struct({
  id: TenantConfig.fields.id,
  max_messages_per_second: TenantConfig.fields.max_messages_per_second.annotations({
    description: "Ingest quota, messages per second over MQTT and HTTP together; absent = none",
  }),
  raw_retention_days: TenantConfig.fields.raw_retention_days.annotations({
    description: rawRetention,
  }),
  rollup_retention_days: TenantConfig.fields.rollup_retention_days.annotations({
    description: rollupRetention,
  }),
}).annotations({ identifier: "CreateTenant" })

/** A setting to change: a value sets it, `null` unsets it (none / forever), absent leaves it. */
const change = <A, I>(schema: Schema.Schema<A, I>, description: string) =>
  Schema.optional(Schema.NullOr(schema)).annotations({ description: `${description}; null unsets it` })

export const UpdateTenant = Schema.Struct({
  max_messages_per_second: change(
    TenantConfig.fields.max_messages_per_second.from,
    "Ingest quota, messages per second",
  ),
  raw_retention_days: change(RetentionDays, rawRetention),
  rollup_retention_days: change(RetentionDays, rollupRetention),
}).annotations({ identifier: "UpdateTenant" })

export const CreateApiKey = Schema.Struct({
  role: Schema.Literal("admin", "read").annotations({
    message: (issue) => ({
      message: `expected "admin" or "read", got ${JSON.stringify(issue.actual)}`,
      override: true,
    }),
    description:
      "`admin`: reads the tenant's data and manages its devices, classes and keys; `read`: reads only",
  }),
  name: Schema.String.pipe(
    Schema.minLength(1, { message: () => "must not be empty" }),
    Schema.maxLength(100, { message: () => "must be at most 100 characters" }),
  ).annotations({ description: "A label for people, e.g. who holds the key" }),
}).annotations({ identifier: "CreateApiKey" })

export const CreateDevice = Schema.Struct({
  id: Id.annotations({ description: "Unique across every tenant: it is the device's MQTT client id" }),
  class: Id.annotations({ description: "A shared device class or one of the tenant's own" }),
}).annotations({ identifier: "CreateDevice" })

/** The bulk body, JSON: an array of devices. */
export const BulkDevicesJson = Schema.Array(CreateDevice).annotations({
  identifier: "BulkDevices",
  description: "JSON: an array of devices",
})

/** The bulk body, CSV: a header `id,class` and one device per line. */
export const BulkDevicesCsv = HttpApiSchema.Text({ contentType: "text/csv" }).annotations({
  description: "CSV: the header `id,class`, then one device per line",
})

export const Rotate = Schema.Struct({
  grace_seconds: Schema.optional(
    Schema.Int.pipe(
      Schema.between(0, MAX_GRACE_SECONDS, {
        message: () => `must be a whole number of seconds from 0 to ${MAX_GRACE_SECONDS} (30 days)`,
      }),
    ),
  ).annotations({
    description: `How long the old credential keeps working, seconds; default ${DEFAULT_GRACE_SECONDS}, 0 = not at all`,
  }),
}).annotations({ identifier: "RotateCredential" })

/** A class definition: the configuration file's `device_classes` entry without its `name`. */
export const ClassDefinition = DeviceClassConfig.omit("name").annotations({
  identifier: "DeviceClassDefinition",
  description:
    "As a `device_classes` entry of the configuration file, without `name`: `fields`, and optionally " +
    "`time_field`, `time_format`, `message_id_field` (docs/configuration.md)",
})

export const CreateDeviceClass = Schema.Struct({
  name: Id.annotations({ description: "Unique across every tenant and the shared classes" }),
  definition: ClassDefinition,
}).annotations({ identifier: "CreateDeviceClass" })

export const AddClassVersion = Schema.Struct({ definition: ClassDefinition }).annotations({
  identifier: "AddDeviceClassVersion",
})

// Answers.

const Tenant = Schema.Struct({
  id: Schema.String,
  max_messages_per_second: Schema.optional(Schema.Number),
  raw_retention_days: Schema.optional(Schema.Number),
  rollup_retention_days: Schema.optional(Schema.Number),
  source: Source,
  devices: Schema.Number.annotations({ description: "How many devices the tenant has" }),
}).annotations({ identifier: "Tenant" })

const ApiKeyInfo = Schema.Struct({
  id: Schema.String.annotations({
    description: "The first 12 hex digits of the key's SHA-256: names the key, never reveals it",
  }),
  name: Schema.String,
  role: Schema.Literal("admin", "read"),
  source: Source,
}).annotations({ identifier: "ApiKey" })

const CreatedApiKey = Schema.Struct({
  key: Schema.String.annotations({ description: "The key: shown this once, stored only as a hash" }),
  id: Schema.String,
  name: Schema.String,
  role: Schema.Literal("admin", "read"),
}).annotations({ identifier: "CreatedApiKey" })

const CreatedDevice = Schema.Struct({
  id: Schema.String,
  class: Schema.String,
  credential: Schema.String.annotations({
    description:
      "The device's secret (MQTT password, HTTP bearer token): shown this once, stored only as a hash",
  }),
}).annotations({ identifier: "CreatedDevice" })

const BulkCreated = Schema.Struct({
  count: Schema.Number,
  devices: Schema.Array(
    Schema.Struct({
      id: Schema.String,
      credential: Schema.String.annotations({ description: "Shown this once, stored only as a hash" }),
    }),
  ).annotations({ description: "Every device created, in the order of the request" }),
}).annotations({ identifier: "BulkCreated" })

const DeviceState = Schema.Struct({
  id: Schema.String,
  class: Schema.String,
  enabled: Schema.Boolean,
  source: Source,
}).annotations({ identifier: "DeviceState" })

const Rotated = Schema.Struct({
  credential: Schema.String.annotations({ description: "The new credential: shown this once" }),
  previous_valid_until: Schema.NullOr(Schema.Number).annotations({
    description: "Until when (epoch ms) the previous credential keeps working; null if it stopped at once",
  }),
}).annotations({ identifier: "RotatedCredential" })

const ClassSummary = Schema.Struct({
  name: Schema.String,
  shared: Schema.Boolean.annotations({
    description: "true: from the configuration file, usable by every tenant; false: the tenant's own",
  }),
  source: Source,
  version: Schema.Number.annotations({ description: "The current version: devices decode with it" }),
  definition: ClassDefinition,
}).annotations({ identifier: "DeviceClassSummary" })

const ClassDetail = Schema.Struct({
  name: Schema.String,
  shared: Schema.Boolean,
  source: Source,
  versions: Schema.Array(Schema.Struct({ version: Schema.Number, definition: ClassDefinition })).annotations({
    description: "Every version, oldest first; the last is current. A version never changes",
  }),
}).annotations({ identifier: "DeviceClassDetail" })

const ClassVersion = Schema.Struct({
  name: Schema.String,
  version: Schema.Number.annotations({ description: "The version just added, now the current one" }),
}).annotations({ identifier: "DeviceClassVersion" })

const TenantPath = Schema.Struct({ tenantId: Schema.String })
const KeyPath = Schema.Struct({ tenantId: Schema.String, keyId: Schema.String })
const DevicePath = Schema.Struct({ deviceId: Schema.String })
const ClassPath = Schema.Struct({ name: Schema.String })

const created = { status: 201 } as const

const sources =
  "Rows come from two sources: the configuration file (`source: config`, applied by `sluice apply` " +
  "or `--config`) and this API (`source: api`). Rows of the file may be disabled, enabled and " +
  'rotated here, but not deleted (409 "managed by the configuration file"): remove them from the ' +
  "file. Secrets (keys, credentials) are returned once, when made, and stored only as SHA-256 hashes. " +
  "A change is live in every process within the registry poll interval (1 s by default)."

export class TenantsApi extends HttpApiGroup.make("tenants")
  .add(
    HttpApiEndpoint.get("list", "/v1/tenants")
      .addSuccess(Schema.Struct({ tenants: Schema.Array(Tenant) }))
      .annotate(OpenApi.Description, "Every tenant. Operator keys only."),
  )
  .add(
    HttpApiEndpoint.post("create", "/v1/tenants")
      .setPayload(CreateTenant)
      .addSuccess(Tenant, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(OpenApi.Description, "Creates a tenant (with no key: create one next). Operator keys only."),
  )
  .add(
    HttpApiEndpoint.patch("update", "/v1/tenants/:tenantId")
      .setPath(TenantPath)
      .setPayload(UpdateTenant)
      .addSuccess(Tenant)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(TenantNotFound)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Changes a tenant's quota and retentions. Operator keys only; a tenant of the configuration " +
          "file is changed in the file. A shorter retention drops the expired data at the next expiry pass.",
      ),
  )
  .add(
    HttpApiEndpoint.del("delete", "/v1/tenants/:tenantId")
      .setPath(TenantPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Conflict)
      .addError(TenantNotFound)
      .addError(StorageUnavailable, storageUnavailableStatus)
      .annotate(
        OpenApi.Description,
        "Deletes a tenant with its keys, devices and own device classes, and all its stored data " +
          "(readings, dead letters, latest values, rollups). Operator keys only; a tenant of the " +
          "configuration file is removed from the file. 503: the data could not be removed; the " +
          "message says whether the tenant is still registered (retry) or not.",
      ),
  )
  .add(
    HttpApiEndpoint.post("createKey", "/v1/tenants/:tenantId/keys")
      .setPath(TenantPath)
      .setPayload(CreateApiKey)
      .addSuccess(CreatedApiKey, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(TenantNotFound)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Makes an API key of the tenant; the key is in this answer only. An operator key, or an admin " +
          "key of this tenant (another tenant is answered 404).",
      ),
  )
  .add(
    HttpApiEndpoint.get("listKeys", "/v1/tenants/:tenantId/keys")
      .setPath(TenantPath)
      .addSuccess(Schema.Struct({ keys: Schema.Array(ApiKeyInfo) }))
      .addError(TenantNotFound)
      .annotate(
        OpenApi.Description,
        "The tenant's keys: id, name, role, never the key. An operator key, or an admin key of this tenant.",
      ),
  )
  .add(
    HttpApiEndpoint.del("deleteKey", "/v1/tenants/:tenantId/keys/:keyId")
      .setPath(KeyPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Conflict)
      .addError(TenantNotFound)
      .addError(ApiKeyNotFound)
      .annotate(
        OpenApi.Description,
        "Revokes a key (within the poll interval, on every process). An operator key, or an admin key of this tenant.",
      ),
  )
  .addError(Forbidden)
  .addError(RegistryUnavailable)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Tenants")
  .annotate(
    OpenApi.Description,
    `Tenants and their API keys. An operator key manages every tenant; a tenant admin key manages its own tenant's keys. ${sources}`,
  ) {}

export class DeviceAdminApi extends HttpApiGroup.make("deviceAdmin")
  .add(
    HttpApiEndpoint.post("create", "/v1/devices")
      .setPayload(CreateDevice)
      .addSuccess(CreatedDevice, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Registers a device of the key's tenant and makes its credential, returned this once. The device may connect at once (within the poll interval).",
      ),
  )
  .add(
    HttpApiEndpoint.post("bulk", "/v1/devices/bulk")
      .setPayload(Schema.Union(BulkDevicesJson, BulkDevicesCsv))
      .addSuccess(BulkCreated, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .addError(BulkRefused)
      .annotate(
        OpenApi.Description,
        "Registers up to 100,000 devices at once, all or nothing: a JSON array (`Content-Type: application/json`) or CSV " +
          "(`Content-Type: text/csv`, header `id,class`). Any bad row (malformed id, unknown class, an id twice in the " +
          "request, an id already registered) refuses the whole request, listing each bad row's number, id and reason. " +
          "This endpoint takes bodies up to 16 MiB (the others: 1 MiB).",
      ),
  )
  .add(
    HttpApiEndpoint.post("disable", "/v1/devices/:deviceId/disable")
      .setPath(DevicePath)
      .addSuccess(DeviceState)
      .addError(Conflict)
      .annotate(
        OpenApi.Description,
        "Disables a device: refused at connect, and its open connections closed, within the poll interval.",
      ),
  )
  .add(
    HttpApiEndpoint.post("enable", "/v1/devices/:deviceId/enable")
      .setPath(DevicePath)
      .addSuccess(DeviceState)
      .addError(Conflict)
      .annotate(OpenApi.Description, "Enables a disabled device again."),
  )
  .add(
    HttpApiEndpoint.del("delete", "/v1/devices/:deviceId")
      .setPath(DevicePath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(Conflict)
      .annotate(
        OpenApi.Description,
        "Deletes a device (its stored readings stay). A device of the configuration file is removed from the file.",
      ),
  )
  .add(
    HttpApiEndpoint.post("rotate", "/v1/devices/:deviceId/rotate")
      .setPath(DevicePath)
      .setPayload(Rotate)
      .addSuccess(Rotated)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Makes a new credential (returned this once); the old one keeps working for `grace_seconds`, then not. " +
          "A device of the configuration file gets its file credential back when the file is applied again.",
      ),
  )
  .addError(DeviceNotFound)
  .addError(Forbidden)
  .addError(RegistryUnavailable)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Device administration")
  .annotate(
    OpenApi.Description,
    `A tenant's devices, managed with an admin key of the tenant (the tenant is the key's; a read key gets 403). ` +
      `Another tenant's device is answered exactly like a missing one (404). ${sources}`,
  ) {}

export class DeviceClassesApi extends HttpApiGroup.make("deviceClasses")
  .add(
    HttpApiEndpoint.get("list", "/v1/device-classes")
      .addSuccess(Schema.Struct({ deviceClasses: Schema.Array(ClassSummary) }))
      .annotate(
        OpenApi.Description,
        "The shared classes and the tenant's own, each with its current version.",
      ),
  )
  .add(
    HttpApiEndpoint.get("get", "/v1/device-classes/:name")
      .setPath(ClassPath)
      .addSuccess(ClassDetail)
      .addError(DeviceClassNotFound)
      .annotate(OpenApi.Description, "A class with every version."),
  )
  .add(
    HttpApiEndpoint.post("create", "/v1/device-classes")
      .setPayload(CreateDeviceClass)
      .addSuccess(ClassVersion, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Creates a class of the tenant, at version 1. The definition is checked as the configuration file's classes are.",
      ),
  )
  .add(
    HttpApiEndpoint.post("addVersion", "/v1/device-classes/:name/versions")
      .setPath(ClassPath)
      .setPayload(AddClassVersion)
      .addSuccess(ClassVersion, created)
      .addError(Conflict)
      .addError(BodyTooLarge)
      .addError(DeviceClassNotFound)
      .addError(InvalidBody)
      .annotate(
        OpenApi.Description,
        "Adds a version to one of the tenant's classes; its devices decode their next message with it (within the poll " +
          "interval), and rows already stored keep the version that decoded them. Shared classes belong to the " +
          "configuration file: 403.",
      ),
  )
  .addError(Forbidden)
  .addError(RegistryUnavailable)
  .middleware(AdminAuthentication)
  .annotate(OpenApi.Title, "Device classes")
  .annotate(
    OpenApi.Description,
    "How a class's messages decode. Shared classes come from the configuration file and every tenant may use " +
      "them; a tenant's own classes are made here with its admin key (read keys may list them). A version never " +
      `changes: a change is a new version. ${sources}`,
  ) {}
