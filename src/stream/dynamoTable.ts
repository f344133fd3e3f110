/**
 * A DynamoDB table keyed by one string attribute, as the lease table (`DynamoShardLeases`) and
 * the quota table (`src/tenancy/DynamoQuota.ts`) need it: connected to, created with on-demand
 * capacity if missing (another process creating it first is fine), and waited for until ACTIVE.
 * Loaded only where DynamoDB is configured.
 */
import { CreateTableCommand, DescribeTableCommand, type DynamoDBClient } from "@aws-sdk/client-dynamodb"
import { Duration, Effect } from "effect"
import { AwsError, call } from "./kinesisClient.js"

export interface TableOptions {
  readonly table: string
  /** The partition key's attribute name (type S). */
  readonly key: string
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
    (out) => out.Table?.TableStatus,
  )
  const create = bounded(
    call((abortSignal) =>
      client.send(
        new CreateTableCommand({
          TableName,
          BillingMode: "PAY_PER_REQUEST",
          AttributeDefinitions: [{ AttributeName: options.key, AttributeType: "S" }],
          KeySchema: [{ AttributeName: options.key, KeyType: "HASH" }],
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
  return describe.pipe(
    Effect.catchIf(
      (e) => e.name === "ResourceNotFoundException",
      () => Effect.as(create, "CREATING"),
    ),
    Effect.flatMap((status) =>
      status === "ACTIVE"
        ? Effect.void
        : describe.pipe(
            Effect.delay("100 millis"),
            Effect.repeat({ until: (s) => s === "ACTIVE" }),
            Effect.timeoutFail({
              duration: options.activeTimeoutMs ?? 120_000,
              onTimeout: () =>
                new AwsError({ name: "TableNotActive", message: `${TableName} not ACTIVE`, fault: "server" }),
            }),
            Effect.asVoid,
          ),
    ),
  )
}
