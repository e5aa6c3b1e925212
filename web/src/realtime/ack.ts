/**
 * The saved / saving / offline indicator, driven by the server's `[100][n]` message: "the first n
 * sync-step-2/update messages this connection sent are in the update log". We count what the
 * provider sends on each connection and remember which count covers the newest local edit.
 * Edits made while offline (or sent but never acknowledged before a drop) travel in the sync step 2
 * of the next connection, so that message becomes what must be acknowledged.
 */
import * as decoding from 'lib0/decoding'

export type SaveState = 'saved' | 'saving' | 'offline'

export const MESSAGE_SYNC = 0
export const SYNC_STEP2 = 1
export const SYNC_UPDATE = 2
export const MESSAGE_ACK = 100

/** True for a client frame the server's ack counter counts (sync step 2 or update). */
export function isCounted(frame: Uint8Array): boolean {
  if (frame.length < 2) return false
  const decoder = decoding.createDecoder(frame)
  if (decoding.readVarUint(decoder) !== MESSAGE_SYNC) return false
  const sub = decoding.readVarUint(decoder)
  return sub === SYNC_STEP2 || sub === SYNC_UPDATE
}

export function toBytes(data: string | ArrayBufferLike | ArrayBufferView): Uint8Array | null {
  if (typeof data === 'string') return null
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return new Uint8Array(data)
}

export class AckTracker {
  private connected = false
  private sent = 0
  private acked = 0
  /** This connection's count that must be acknowledged for the newest local edit to be durable. */
  private needed = 0
  /** Local edits not yet carried by any message of the current connection. */
  private unsent = false
  private listeners = new Set<(state: SaveState) => void>()
  state: SaveState = 'offline'

  onChange(listener: (state: SaveState) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private update(): void {
    const next: SaveState = !this.connected ? 'offline' : this.unsent || this.acked < this.needed ? 'saving' : 'saved'
    if (next !== this.state) {
      this.state = next
      for (const listener of this.listeners) listener(next)
    }
  }

  /** A new connection opened: counting starts again; anything not acknowledged must be resent. */
  opened(): void {
    if (this.acked < this.needed) this.unsent = true
    this.connected = true
    this.sent = 0
    this.acked = 0
    this.needed = 0
    this.update()
  }

  closed(): void {
    if (this.acked < this.needed) this.unsent = true
    this.connected = false
    this.update()
  }

  /** The provider sent a frame on the current connection. */
  sentFrame(frame: Uint8Array): void {
    if (!isCounted(frame)) return
    this.sent += 1
    const sub = frame[1]
    // A step 2 carries whatever the server lacked, our offline edits included; an update is an edit.
    if (sub === SYNC_UPDATE || this.unsent) {
      this.needed = this.sent
      this.unsent = false
    }
    this.update()
  }

  /** A local edit happened (after the provider's own handler may already have sent it). */
  localEdit(sentNow: boolean): void {
    if (!sentNow) this.unsent = true
    this.update()
  }

  /** The server's `[100][n]`. */
  ack(n: number): void {
    if (n > this.acked) this.acked = n
    this.update()
  }

  /** True while some local edit is not known to be durable. */
  get dirty(): boolean {
    return this.unsent || this.acked < this.needed
  }
}

/** Read the n of an ack message body (after its type varuint). */
export function readAck(decoder: decoding.Decoder): number {
  return decoding.readVarUint(decoder)
}
