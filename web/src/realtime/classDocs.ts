/**
 * The whole class's text over ONE `/ws/classes/{id}/docs` socket (README "Live sockets"): every
 * binary frame is `[varString essay_id][doc-socket message]`. Following an essay sends
 * `[id][sync step 1]`; the server answers with step 2 and its own step 1, then the student's
 * updates. We keep a Y.Doc per followed essay and never answer with writes (the socket is
 * read-only: a step 2 reply would carry nothing the server lacks, so we send none).
 */
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { ReconnectingSocket, isFatalClose, type SocketStatus } from './reconnecting'
import type { SocketClass } from './ticketSocket'

export const MESSAGE_SYNC = 0
export const MESSAGE_AUTH = 2
export const MESSAGE_UNWATCH = 101

export function followFrame(essayId: string, doc: Y.Doc): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeVarString(encoder, essayId)
  encoding.writeVarUint(encoder, MESSAGE_SYNC)
  syncProtocol.writeSyncStep1(encoder, doc)
  return encoding.toUint8Array(encoder)
}

export function unfollowFrame(essayId: string): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeVarString(encoder, essayId)
  encoding.writeVarUint(encoder, MESSAGE_UNWATCH)
  return encoding.toUint8Array(encoder)
}

/**
 * The local copy of a followed essay's doc, with the essay id as its guid: Yjs's default guid, a
 * random UUID, costs 31 crypto calls per doc, the largest part of following a class of 30 in the
 * task that turns the whole-class text on (web/README.md, "Start-up margin").
 */
export function followedDoc(essayId: string): Y.Doc {
  return new Y.Doc({ guid: essayId })
}

export interface ClassDocsEvents {
  /** The essay's text changed (read it with `textOf`: callers batch, so it is built once per frame). */
  text(essayId: string): void
  denied(essayId: string, reason: string): void
  status?(status: SocketStatus): void
}

export class ClassDocs {
  private docs = new Map<string, Y.Doc>()
  private socket: ReconnectingSocket

  constructor(url: string, Socket: SocketClass, private readonly events: ClassDocsEvents) {
    this.socket = new ReconnectingSocket({
      url, Socket, fatal: isFatalClose,
      // After a reconnect, ask again for each essay from what we already have.
      onOpen: (send) => { for (const [id, doc] of this.docs) send(followFrame(id, doc)) },
      onMessage: (data) => { if (typeof data !== 'string') this.receive(data) },
      onStatus: (s) => events.status?.(s),
    })
  }

  follow(essayId: string): void {
    if (this.docs.has(essayId)) return
    const doc = followedDoc(essayId)
    const text = doc.getText('content')
    text.observe(() => this.events.text(essayId))
    this.docs.set(essayId, doc)
    this.socket.send(followFrame(essayId, doc))
  }

  unfollow(essayId: string): void {
    const doc = this.docs.get(essayId)
    if (!doc) return
    this.docs.delete(essayId)
    doc.destroy()
    this.socket.send(unfollowFrame(essayId))
  }

  receive(frame: Uint8Array): void {
    const decoder = decoding.createDecoder(frame)
    const essayId = decoding.readVarString(decoder)
    const type = decoding.readVarUint(decoder)
    if (type === MESSAGE_AUTH) {
      decoding.readVarUint(decoder) // 0: permission denied
      this.events.denied(essayId, decoding.readVarString(decoder))
      this.unfollow(essayId)
      return
    }
    const doc = this.docs.get(essayId)
    if (type !== MESSAGE_SYNC || !doc) return
    // The reply encoder is discarded: this socket is read-only.
    syncProtocol.readSyncMessage(decoder, encoding.createEncoder(), doc, this)
  }

  textOf(essayId: string): string {
    return this.docs.get(essayId)?.getText('content').toString() ?? ''
  }

  stop(): void {
    this.socket.stop()
    for (const doc of this.docs.values()) doc.destroy()
    this.docs.clear()
  }
}
