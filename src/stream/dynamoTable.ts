/**
 * A DynamoDB table keyed by string attributes, as the lease table (`DynamoShardLeases`), the quota
 * table (`src/tenancy/DynamoQuota.ts`) and the registry (`src/tenancy/DynamoRegistry.ts`) need
 * it: connected to, created with on-demand capacity if missing (another process creating it first
 * is fine), refused if it exists with other keys (another table named by mistake), and waited for
 * until ACTIVE. Loaded only where DynamoDB is configured.
 */
import { CreateTableCommand, DescribeTableCommand, type DynamoDBClient } from "@aws-sdk/client-dynamodb"
import { Duration, Effect } from "effect"
import { AwsError, call } from "./kinesisClient.js"

export interface TableOptions {
  readonly table: string
  /** The partition key's attribute name (type S). */
  readonly key: string
  /** The sort key's attribute name (type S), if the table has one. */
  readonly sortKey?: string | undefined
  /** How long to wait for a new table to become ACTIVE. Default 120 s. */
  readonly activeTimeoutMs?: number | undefined
  /** Bound on each call (none by default: the client's own timeouts apply). */
  readonly callTimeoutMs?: number | undefined
}

export const ensureTable = (client: DynamoDBClient, options: TableOptions): Effect.Effect<void, AwsError> => {
  const TableName = options.table
  const bounded = <A>(effect: Effect.Effect<A, AwsError>) =>
    options.callTimeoutMs === undefined
      ? effect
      : effect.pipe(
          Effect.timeoutFail({
            duration: Duration.millis(options.callTimeoutMs),
            onTimeout: () =>
              new AwsError({
                name: "TimeoutError",
                message: `no answer within ${options.callTimeoutMs} ms`,
                fault: "network",
              }),
          }),
        )
  const describe = Effect.map(
    bounded(call((abortSignal) => client.send(new DescribeTableCommand({ TableName }), { abortSignal }))),
    (out) => out.Table,
  )
  const keys: ReadonlyArray<readonly [string, "HASH" | "RANGE"]> = [
    [options.key, "HASH"],
    ...(options.sortKey === undefined ? [] : [[options.sortKey, "RANGE"] as const]),
  ]
  const create = bounded(
    call((abortSignal) =>
      client.send(
        new CreateTableCommand({
          TableName,
          BillingMode: "PAY_PER_REQUEST",
          AttributeDefinitions: keys.map(([AttributeName]) => ({ AttributeName, AttributeType: "S" })),
          KeySchema: keys.map(([AttributeName, KeyType]) => ({ AttributeName, KeyType })),
        }),
        { abortSignal },
      ),
    ),
  ).pipe(
    // Another process of the fleet created it first.
    Effect.catchIf(
      (e) => e.name === "ResourceInUseException",
      () => Effect.void,
    ),
  )
  const wanted = keys
    .map(([name, type]) => `${name}:${type}`)
    .sort()
    .join(",")
  return describe.pipe(
    Effect.catchIf(
      (e) => e.name === "ResourceNotFoundException",
      () => Effect.as(create, undefined),
    ),
    Effect.flatMap((table) => {
      if (table !== undefined) {
        const found = (table.KeySchema ?? [])
          .map((k) => `${k.AttributeName}:${k.KeyType}`)
          .sort()
          .join(",")
        if (found !== wanted) {
          return Effect.fail(
            new AwsError({
              name: "UnexpectedKeySchema",
              message: `${TableName} is keyed ${found || "(nothing)"}, not ${wanted}: is it another table?`,
              fault: "client",
            }),
          )
        }
        if (table.TableStatus === "ACTIVE") return Effect.void
      }
      return describe.pipe(
        Effect.delay("100 millis"),
        Effect.repeat({ until: (t) => t?.TableStatus === "ACTIVE" }),
        Effect.timeoutFail({
          duration: options.activeTimeoutMs ?? 120_000,
          onTimeout: () =>
            new AwsError({ name: "TableNotActive", message: `${TableName} not ACTIVE`, fault: "server" }),
        }),
        Effect.asVoid,
      )
    }),
  )
}
