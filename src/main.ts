/**
 * `npm start`: the embedded platform, every tier in one process. Wiring only: the tiers' layers,
 * stacked so that shutdown (SIGINT/SIGTERM) unwinds them in order — not ready, ingress stops
 * accepting, the processor drains and checkpoints, then the stream and the store close.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect, Layer } from "effect"
import * as LiveFeed from "./actors/LiveFeed.js"
import * as Processor from "./actors/Processor.js"
import * as MqttBroker from "./ingress/MqttBroker.js"
import * as Metrics from "./observability/Metrics.js"
import * as Cli from "./platform/Cli.js"
import * as Welcome from "./platform/Welcome.js"
import * as HttpServer from "./serving/HttpServer.js"
import * as Readiness from "./serving/Readiness.js"
import * as ClickHouseTelemetryStore from "./storage/ClickHouseTelemetryStore.js"
import * as KinesisStreamLog from "./stream/KinesisStreamLog.js"
import * as SqliteStreamLog from "./stream/SqliteStreamLog.js"
import * as StreamConfig from "./stream/StreamConfig.js"
import * as ConfigFile from "./tenancy/ConfigFile.js"
import * as Tenancy from "./tenancy/Tenancy.js"

const configFile = Config.string("config_file").pipe(
  Config.withDefault("config/demo.yaml"),
  Config.nested("sluice"),
)

const TenancyLive = Layer.unwrapEffect(
  Effect.map(Effect.flatMap(configFile, ConfigFile.load), (config) =>
    Layer.merge(Tenancy.layer(config), Welcome.layer(config)),
  ),
)

const StreamLive = Layer.unwrapEffect(
  Effect.map(StreamConfig.backend, (backend) =>
    backend === "kinesis" ? KinesisStreamLog.layer : SqliteStreamLog.layer,
  ),
)

const Infrastructure = Layer.mergeAll(
  StreamLive,
  ClickHouseTelemetryStore.layer,
  TenancyLive,
  LiveFeed.layer,
  Metrics.layer,
  Readiness.layer,
)

export const Main = Readiness.markReadyWhileAlive.pipe(
  Layer.provide(Welcome.announce),
  Layer.provide(Layer.mergeAll(MqttBroker.layer, HttpServer.layer)),
  Layer.provide(Processor.layer),
  Layer.provideMerge(Infrastructure),
)

const cli = (() => {
  try {
    return Cli.parse(process.argv.slice(2))
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${Cli.usage}`)
    process.exit(2)
  }
})()
if (cli.help) {
  console.log(Cli.usage)
  process.exit(0)
}

Layer.launch(Main).pipe(
  Effect.withConfigProvider(cli.provider),
  // A bad configuration file is the user's to fix: say exactly what is wrong, no stack trace.
  Effect.catchTag("ConfigFileError", (error) =>
    Effect.sync(() => {
      console.error(`sluice: refusing to start\n${error.message}`)
      process.exitCode = 1
    }),
  ),
  NodeRuntime.runMain({ disablePrettyLogger: true }),
)
