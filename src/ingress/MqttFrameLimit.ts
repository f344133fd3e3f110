/**
 * A byte bound on MQTT packets before they are buffered. aedes's parser (mqtt-packet) keeps a
 * packet's bytes until the whole packet has arrived, and MQTT allows 256 MiB per packet, so a
 * client could make the broker hold that much per connection before any hook sees the payload.
 * This wrapper reads each packet's fixed header as the bytes pass (its Remaining Length, §2.2.3)
 * and cuts the connection as soon as a packet declares more than the limit.
 */
import type { Socket } from "node:net"
import { Duplex } from "node:stream"
import { Data } from "effect"

/** A client declared a packet larger than the broker accepts; the connection is closed. */
export class MqttPacketTooLarge extends Data.TaggedError("MqttPacketTooLarge")<{
  readonly declaredBytes: number
  readonly maxBytes: number
}> {
  override get message() {
    return `MQTT packet declares ${this.declaredBytes} bytes, the limit is ${this.maxBytes}`
  }
}

const HEADER = 0
const LENGTH = 1
const BODY = 2

/** The socket as aedes sees it: same bytes both ways, checked packet by packet on the way in. */
export class FrameLimitedConnection extends Duplex {
  private state = HEADER
  private length = 0
  private multiplier = 1
  private remaining = 0

  constructor(
    readonly socket: Socket,
    readonly maxPacketBytes: number,
  ) {
    super({ allowHalfOpen: false })
    socket.on("data", (chunk: Buffer) => {
      const declared = this.scan(chunk)
      if (declared !== undefined) {
        this.destroy(new MqttPacketTooLarge({ declaredBytes: declared, maxBytes: maxPacketBytes }))
      } else if (!this.push(chunk)) {
        socket.pause()
      }
    })
    socket.once("end", () => this.push(null))
    socket.on("error", (error) => this.destroy(error))
    socket.once("close", () => this.destroy())
  }

  get remoteAddress() {
    return this.socket.remoteAddress
  }

  get remotePort() {
    return this.socket.remotePort
  }

  /** Walks the chunk's packet boundaries; returns a declared length over the limit, if any. */
  private scan(chunk: Buffer): number | undefined {
    let i = 0
    while (i < chunk.length) {
      if (this.state === HEADER) {
        i++
        this.state = LENGTH
        this.length = 0
        this.multiplier = 1
      } else if (this.state === LENGTH) {
        const byte = chunk[i++]!
        this.length += (byte & 0x7f) * this.multiplier
        this.multiplier *= 128
        if (byte & 0x80) {
          // §2.2.3: the Remaining Length has at most four bytes; a fifth means a malformed
          // header, which is over any limit.
          if (this.multiplier > 128 ** 3) return Math.max(this.length, 128 ** 4)
          continue
        }
        if (this.length > this.maxPacketBytes) return this.length
        this.remaining = this.length
        this.state = this.remaining === 0 ? HEADER : BODY
      } else {
        const take = Math.min(this.remaining, chunk.length - i)
        i += take
        this.remaining -= take
        if (this.remaining === 0) this.state = HEADER
      }
    }
    return undefined
  }

  override _read() {
    this.socket.resume()
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void) {
    this.socket.write(chunk, encoding, callback)
  }

  // aedes corks the connection around each packet it writes; forwarding corked chunks in one
  // corked socket write turns the PUBACKs of one append batch into one syscall, not one each.
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ) {
    this.socket.cork()
    for (let i = 0; i < chunks.length - 1; i++) this.socket.write(chunks[i]!.chunk)
    this.socket.write(chunks[chunks.length - 1]!.chunk, callback)
    this.socket.uncork()
  }

  override _final(callback: (error?: Error | null) => void) {
    this.socket.end(callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
    this.socket.destroy()
    callback(error)
  }
}
