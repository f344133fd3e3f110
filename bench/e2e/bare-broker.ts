/**
 * The ceiling for bench/e2e: a bare aedes broker that does nothing — no authentication, no
 * stream, no storage; QoS 1 PUBACKs as soon as aedes has the message. argv: port
 */
import { createServer } from "node:net"
import { Aedes } from "aedes"

const port = Number(process.argv[2] ?? 1883)
const broker = await Aedes.createBroker()
const server = createServer(broker.handle)
server.listen(port, "127.0.0.1", () => console.log(`bare aedes listening on ${port}`))
process.on("SIGTERM", () => {
  broker.close(() => server.close(() => process.exit(0)))
})
