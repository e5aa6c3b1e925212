/**
 * The state behind `/ws/essays/{id}/events`: the current feedback set, comments and the last
 * submission event, kept consistent with `seq`/`epoch`. On reconnect we send `resume` with the
 * last seq and epoch; a `full` feedback event replaces the set (even for a seq already seen, as the
 * README asks); a gap, a new epoch or a `resync` refetches the set over REST.
 */
import type { Comment, FeedbackItem } from '../api/types'

export interface EssayEvent {
  type: string; essay_id?: string; seq?: number; epoch?: string; doc_seq?: number
  items?: FeedbackItem[]; removed?: string[]; full?: boolean; counts?: Record<string, number>
  comment?: Comment; [key: string]: unknown
}

export interface EventSink {
  feedback(items: FeedbackItem[]): void
  comment(comment: Comment): void
  submission(event: EssayEvent): void
  /** A teacher gave, changed or withdrew the student's extension (`deadline` event). */
  deadline?(event: EssayEvent): void
  /** Fetch feedback and comments over REST (the socket cannot fill the gap). */
  refetch(): void
}

export class EssayEventState {
  lastSeq = 0
  epoch: string | null = null
  private items = new Map<string, FeedbackItem>()

  constructor(private readonly sink: EventSink) {}

  /** The message to send when a connection opens. The first connection asks for everything the
   * essay still keeps (`last_seq` 0): that is how a reader learns of earlier submissions. */
  resumeMessage(): string {
    return this.epoch === null
      ? JSON.stringify({ type: 'resume', last_seq: 0 })
      : JSON.stringify({ type: 'resume', last_seq: this.lastSeq, epoch: this.epoch })
  }

  /** Feedback fetched over REST replaces the set. */
  replace(items: FeedbackItem[]): void {
    this.items = new Map(items.map((i) => [i.id, i]))
    this.sink.feedback(this.current())
  }

  current(): FeedbackItem[] {
    return [...this.items.values()].sort((a, b) => a.start - b.start || a.end - b.end)
  }

  handle(raw: string): void {
    let event: EssayEvent
    try {
      event = JSON.parse(raw) as EssayEvent
    } catch {
      return
    }
    if (!event || typeof event.type !== 'string') return
    const seq = typeof event.seq === 'number' ? event.seq : null
    const epoch = typeof event.epoch === 'string' ? event.epoch : null
    if (event.type === 'presence' || event.type === 'resync') {
      const changedEpoch = this.epoch !== null && epoch !== null && epoch !== this.epoch
      const first = this.epoch === null
      if (epoch !== null) this.epoch = epoch
      if (seq !== null) this.lastSeq = seq
      if (event.type === 'resync' || changedEpoch || first) this.sink.refetch()
      return
    }
    if (epoch !== null && this.epoch !== null && epoch !== this.epoch) {
      this.epoch = epoch
      if (seq !== null) this.lastSeq = seq
      this.sink.refetch()
      return
    }
    if (event.type === 'submission') {
      // Delivered even when old (a first connection's backlog): the sink keeps the newest by seq.
      if (seq !== null) this.lastSeq = Math.max(this.lastSeq, seq)
      this.sink.submission(event)
      return
    }
    if (event.type === 'feedback' && event.full) {
      this.replace(event.items ?? [])
      if (seq !== null) this.lastSeq = Math.max(this.lastSeq, seq)
      return
    }
    if (seq !== null) {
      if (seq <= this.lastSeq) return // already applied
      const gap = seq > this.lastSeq + 1 && this.epoch !== null
      this.lastSeq = seq
      if (gap && event.type !== 'saved') {
        // Missed something at-most-once pub/sub dropped: the host is the truth.
        this.sink.refetch()
        if (event.type === 'feedback') return
      }
    }
    switch (event.type) {
      case 'feedback':
        for (const id of event.removed ?? []) this.items.delete(id)
        for (const item of event.items ?? []) this.items.set(item.id, item)
        this.sink.feedback(this.current())
        break
      case 'comment':
        if (event.comment) this.sink.comment(event.comment)
        break
      case 'deadline':
        this.sink.deadline?.(event)
        break
      default:
        break
    }
  }
}
