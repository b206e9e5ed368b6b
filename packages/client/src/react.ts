import { useCallback, useEffect, useRef, useState } from "react";
import { emptyMessage, type Message, MessageAccumulator } from "./accumulator.js";
import type { GenerationRequest, SluiceClient } from "./client.js";
import type { Follow } from "./follow.js";
import type { ConnectionState } from "./machine.js";

export type HookStatus =
  | "idle"
  | "starting"
  | "connecting"
  | "streaming"
  | "reconnecting"
  | "completed"
  | "failed"
  | "cancelled";

export interface UseSluiceStreamOptions {
  client: SluiceClient;
  /** Follow this stream on mount (e.g. from the URL after a reload). */
  streamId?: string;
  /** Resume after this offset (default: from the beginning, rebuilding the whole message). */
  offset?: string;
  /** Called on every event with the stream id and the offset reached (persist it to resume). */
  onProgress?: (streamId: string, offset: string) => void;
}

export interface UseSluiceStream {
  status: HookStatus;
  message: Message;
  error: { code: string; message: string } | undefined;
  connection: ConnectionState | undefined;
  streamId: string | undefined;
  /** Time to first token (ms since `start`), once known; only for streams started here. */
  ttftMs: number | undefined;
  /** Starts a generation and follows it. */
  start(request: GenerationRequest): Promise<void>;
  /** Cancels the generation on the server (the stream ends `cancelled`). */
  stop(): Promise<void>;
  /** Follows an existing stream (after a reload, in a second tab). */
  resume(streamId: string, offset?: string): void;
}

/**
 * Follows one Sluice stream from a React component: the message so far, a status that
 * includes reconnecting, stop (cancel on the server) and resume (follow any stream id).
 */
export function useSluiceStream(opts: UseSluiceStreamOptions): UseSluiceStream {
  const { client } = opts;
  const [message, setMessage] = useState<Message>(emptyMessage);
  const [status, setStatus] = useState<HookStatus>("idle");
  const [error, setError] = useState<{ code: string; message: string } | undefined>();
  const [connection, setConnection] = useState<ConnectionState | undefined>();
  const [streamId, setStreamId] = useState<string | undefined>(opts.streamId);
  const [ttftMs, setTtft] = useState<number | undefined>();
  const follow = useRef<Follow | undefined>(undefined);
  const onProgress = useRef(opts.onProgress);
  onProgress.current = opts.onProgress;

  const run = useCallback(
    (id: string, offset: string | undefined, startedAt?: number) => {
      follow.current?.close();
      const acc = new MessageAccumulator();
      setMessage(acc.message);
      setError(undefined);
      setStreamId(id);
      setStatus("connecting");
      const f = client.follow(id, {
        offset: offset ?? "-1",
        onState: (s) => {
          if (follow.current !== f) return;
          setConnection(s);
          if (s.status === "reconnecting") setStatus("reconnecting");
          else if (s.status === "live")
            setStatus((st) => (st === "reconnecting" || st === "connecting" ? "streaming" : st));
        },
      });
      follow.current = f;
      let first = true;
      void (async () => {
        try {
          for await (const se of f) {
            const m = acc.apply(se);
            if (follow.current !== f) return;
            if (first && startedAt !== undefined && m.deltas > 0) {
              first = false;
              setTtft(performance.now() - startedAt);
            }
            setMessage(m);
            if (m.status === "streaming") setStatus("streaming");
            else if (m.status !== "pending") setStatus(m.status);
            onProgress.current?.(id, se.offset);
          }
          if (follow.current === f && acc.message.status === "streaming") setStatus("completed");
        } catch (err) {
          if (follow.current !== f) return;
          const e = err as { code?: string; message?: string };
          setError({ code: e.code ?? "error", message: e.message ?? String(err) });
          setStatus("failed");
        }
      })();
    },
    [client],
  );

  const start = useCallback(
    async (request: GenerationRequest) => {
      follow.current?.close();
      follow.current = undefined;
      setStatus("starting");
      setTtft(undefined);
      const t0 = performance.now();
      try {
        const info = await client.start(request);
        onProgress.current?.(info.id, "-1");
        run(info.id, "-1", t0);
      } catch (err) {
        const e = err as { code?: string; message?: string };
        setError({ code: e.code ?? "error", message: e.message ?? String(err) });
        setStatus("failed");
      }
    },
    [client, run],
  );

  const stop = useCallback(async () => {
    if (!streamId) return;
    await client.cancel(streamId);
  }, [client, streamId]);

  const resume = useCallback((id: string, offset?: string) => run(id, offset), [run]);

  // Follow the stream given on mount; close the follower on unmount.
  const initial = useRef({ id: opts.streamId, offset: opts.offset });
  useEffect(() => {
    if (initial.current.id) run(initial.current.id, initial.current.offset);
    return () => follow.current?.close();
  }, [run]);

  return { status, message, error, connection, streamId, ttftMs, start, stop, resume };
}
