import { getHeapStatistics } from "node:v8";
import { SluiceError } from "@sluice/protocol";

/**
 * Estimated heap cost of one record a generation holds (a running stream's record object on the
 * memory store, or an event queued for a slow store), on top of its data's characters. Measured
 * on Node 20: ~290 bytes for a ~37-character text delta held by the memory store.
 */
export const RECORD_COST_BYTES = 256;

/**
 * What a generation always gets without drawing on the shared pool: a short answer (~200 tokens
 * held on the memory store) fits, and 10,000 idle generations take 640 MiB at most.
 */
export const GENERATION_RESERVE_BYTES = 64 * 1024;

export interface MemoryLimits {
  /** Most bytes one generation may hold in memory (its planned output, its queued and held records). */
  generationBytes: number;
  /** Most bytes all live generations of this node may hold together. */
  generationsBytes: number;
  /** Most bytes (data characters) the memory store keeps for ended streams before evicting the oldest. */
  memoryStoreBytes: number;
}

/**
 * The defaults, from V8's heap limit (`--max-old-space-size`): live generations may hold 40 % of
 * it, one generation at most a quarter of that (and 64 MiB), the memory store's history 30 %.
 * The rest is for readers, sockets, encodings and the collector's headroom.
 */
export function memoryLimits(
  given: {
    generation_bytes?: number | undefined;
    generations_bytes?: number | undefined;
    memory_store_bytes?: number | undefined;
  },
  heapLimit = getHeapStatistics().heap_size_limit,
): MemoryLimits {
  const generationsBytes = given.generations_bytes ?? Math.floor(heapLimit * 0.4);
  return {
    generationsBytes,
    generationBytes: given.generation_bytes ?? Math.min(64 * 1024 * 1024, Math.floor(generationsBytes / 4)),
    memoryStoreBytes: given.memory_store_bytes ?? Math.floor(heapLimit * 0.3),
  };
}

/**
 * The node's memory budget for live generations. Each generation is admitted with a reserve
 * (plus what it plans to hold up front); what it holds beyond the reserve is drawn from the
 * shared pool. So a generation that stays small is never refused mid-way, a large one is
 * stopped at its own bound (`stream_too_large`) or when the pool is empty
 * (`capacity_exceeded`), and a new one is refused at start when the pool cannot cover its
 * reserve (`503 capacity_exceeded` + Retry-After). Total held ≤ generationsBytes, always.
 */
export class MemoryBudget {
  /** Bytes reserved or drawn by live generations. */
  used = 0;
  readonly limits: MemoryLimits;

  constructor(limits: MemoryLimits) {
    this.limits = limits;
  }

  /** Admits a generation that will hold `planned` bytes from its start; throws when it cannot. */
  admit(planned = 0): GenerationHold {
    const { generationBytes, generationsBytes } = this.limits;
    if (planned > generationBytes) {
      throw new SluiceError(
        "stream_too_large",
        `this generation would hold about ${planned} bytes, more than limits.generation_bytes (${generationBytes})`,
      );
    }
    const reserve = Math.min(generationBytes, Math.max(GENERATION_RESERVE_BYTES, planned));
    if (this.used + reserve > generationsBytes) {
      throw new SluiceError(
        "capacity_exceeded",
        "the node's memory budget for running generations (limits.generations_bytes) is full; try again shortly",
        { retry_after_s: 1 },
      );
    }
    this.used += reserve;
    return new GenerationHold(this, reserve, planned);
  }
}

/** One generation's share of the budget. */
export class GenerationHold {
  /** Bytes it holds now (planned output + records). */
  held: number;
  /** What it takes from the budget now: its admission reserve, or what it holds when more. */
  private reserved: number;
  private readonly base: number;
  private released = false;

  constructor(
    private readonly budget: MemoryBudget,
    reserve: number,
    planned: number,
  ) {
    this.base = reserve;
    this.reserved = reserve;
    this.held = planned;
  }

  /**
   * Counts `bytes` more held. Returns the error that must end the generation when that passes
   * its own bound or the pool has no room; nothing is charged then.
   */
  charge(bytes: number): SluiceError | undefined {
    const b = this.budget;
    if (this.released) return undefined;
    const next = this.held + bytes;
    if (next > b.limits.generationBytes) {
      return new SluiceError(
        "stream_too_large",
        `the generation reached its memory bound of ${b.limits.generationBytes} bytes (limits.generation_bytes)`,
      );
    }
    const extra = next - this.reserved;
    if (extra > 0) {
      if (b.used + extra > b.limits.generationsBytes) {
        return new SluiceError(
          "capacity_exceeded",
          "the node's memory budget for running generations (limits.generations_bytes) is full",
        );
      }
      b.used += extra;
      this.reserved = next;
    }
    this.held = next;
    return undefined;
  }

  /** Counts `bytes` no longer held (records the store has taken to disk or Redis). */
  uncharge(bytes: number): void {
    if (this.released) return;
    this.held = Math.max(0, this.held - bytes);
    // What it drew beyond its reserve goes back to the pool.
    const keep = Math.max(this.base, this.held);
    if (this.reserved > keep) {
      this.budget.used -= this.reserved - keep;
      this.reserved = keep;
    }
  }

  /** Gives everything back (the generation ended). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.used = Math.max(0, this.budget.used - this.reserved);
    this.reserved = 0;
  }
}
