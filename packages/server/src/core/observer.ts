import type { TerminalEvent } from "@sluice/protocol";

/**
 * How the core reports what happens, without knowing about metrics or logs: the runner
 * calls `begin` once per generation and gets a tracker back (one allocation per
 * generation; `token()` is called per output token and must stay allocation-free).
 */
export interface GenerationObserver {
  begin(info: { id: string; route: string; model: string }): GenerationTrack | undefined;
}

export interface GenerationTrack {
  /** An output token (text, reasoning or tool-argument delta) was produced. */
  token(): void;
  /** A try at `route` failed before its first token; another try (or a fallback) follows. */
  retry?(route: string): void;
  /**
   * Once, when the first output token's append has committed: the TTFT phase marks
   * (core/phases.ts; performance.now() values, 0 for a phase not reached).
   */
  phases?(at: Float64Array): void;
  /** The generation ended with this terminal event. */
  end(terminal: TerminalEvent): void;
}
