import type { ModelInfo } from "@sluice/client";
import { useSluiceStream } from "@sluice/client/react";
import { useEffect, useMemo, useRef, useState } from "react";
import { client } from "./client.js";
import { renderMarkdown } from "./markdown.js";

/** The stream this page follows lives in the URL hash (#s=<id>): reload resumes, a second tab follows. */
function streamFromHash(): string | undefined {
  const m = /(?:^#|&)s=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  return m?.[1];
}

function setHash(id: string) {
  const hash = `#s=${id}`;
  if (window.location.hash !== hash) history.replaceState(null, "", hash);
}

export function Playground() {
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [model, setModel] = useState("demo");
  const [prompt, setPrompt] = useState(
    "Explain how a durable stream log works, with a code example and a table",
  );
  const [speed, setSpeed] = useState(40);
  const [modelsError, setModelsError] = useState<string | undefined>();
  const initialId = useMemo(streamFromHash, []);
  const s = useSluiceStream({
    client,
    ...(initialId ? { streamId: initialId } : {}),
    onProgress: (id, offset) => {
      setHash(id);
      sessionStorage.setItem(`sluice:${id}`, offset);
    },
  });

  // For tests and debugging: the message as assembled (the rendered HTML loses the raw text).
  useEffect(() => {
    (window as unknown as { __sluiceMessage?: unknown }).__sluiceMessage = s.message;
  });

  useEffect(() => {
    client
      .models()
      .then((list) => {
        setModels(list);
        if (list.length > 0 && !list.some((m) => m.id === "demo")) setModel(list[0]?.id ?? "demo");
      })
      .catch((err: { code?: string; message: string }) =>
        setModelsError(
          err.code === "unauthorized" ? `${err.message} — enter an API key (top right)` : err.message,
        ),
      );
  }, []);

  // Timing: first token and tokens/s, measured here as the text arrives.
  const firstAt = useRef<number | undefined>(undefined);
  const lastAt = useRef<number | undefined>(undefined);
  const shownFor = useRef<string | undefined>(undefined);
  if (shownFor.current !== s.streamId) {
    shownFor.current = s.streamId;
    firstAt.current = undefined;
    lastAt.current = undefined;
  }
  if (s.message.deltas > 0) {
    const now = performance.now();
    if (firstAt.current === undefined) firstAt.current = now;
    if (s.status === "streaming" || s.status === "reconnecting" || lastAt.current === undefined)
      lastAt.current = now;
  }
  const elapsed =
    firstAt.current !== undefined && lastAt.current !== undefined ? lastAt.current - firstAt.current : 0;
  const tps = s.message.deltas > 1 && elapsed > 0 ? ((s.message.deltas - 1) * 1000) / elapsed : undefined;

  const running =
    s.status === "starting" ||
    s.status === "connecting" ||
    s.status === "streaming" ||
    s.status === "reconnecting";
  const final = !running;
  const html = useMemo(() => renderMarkdown(s.message.text, final), [s.message.text, final]);

  const send = async () => {
    const isDemo = models.find((m) => m.id === model)?.owned_by.includes("simulator") ?? model === "demo";
    await s.start({
      model,
      messages: [{ role: "user", content: prompt }],
      ...(isDemo ? { demo: { tokens_per_s: speed } } : {}),
    });
  };

  return (
    <div className="playground">
      <section className="controls">
        <label>
          Model
          <select data-testid="model" value={model} onChange={(e) => setModel(e.target.value)}>
            {(models.length ? models : [{ id: "demo", owned_by: "" }]).map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
        </label>
        {model === "demo" && (
          <label>
            Demo speed (tokens/s)
            <input
              data-testid="speed"
              type="number"
              min={1}
              max={5000}
              value={speed}
              onChange={(e) => setSpeed(Number(e.target.value) || 40)}
            />
          </label>
        )}
        {modelsError && <span className="err">models: {modelsError}</span>}
      </section>
      <textarea
        data-testid="prompt"
        value={prompt}
        rows={3}
        onChange={(e) => setPrompt(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.metaKey || e.ctrlKey) && !running) void send();
        }}
      />
      <div className="actions">
        <button type="button" data-testid="send" onClick={() => void send()} disabled={running}>
          Send
        </button>
        <button
          type="button"
          data-testid="stop"
          onClick={() => void s.stop()}
          disabled={!running || !s.streamId}
        >
          Stop
        </button>
        <span className={`status status-${s.status}`} data-testid="status">
          {s.status}
        </span>
        {s.status === "reconnecting" && s.connection?.status === "reconnecting" && (
          <span className="reconnecting" data-testid="reconnecting">
            Connection lost — reconnecting (attempt {s.connection.attempt})…
          </span>
        )}
        <span className="metric">
          TTFT <b data-testid="ttft">{s.ttftMs !== undefined ? `${Math.round(s.ttftMs)} ms` : "—"}</b>
        </span>
        <span className="metric">
          <b data-testid="tps">{tps !== undefined ? tps.toFixed(1) : "—"}</b> tokens/s
        </span>
        <span className="metric">
          <b data-testid="tokens">{s.message.deltas}</b> tokens
        </span>
      </div>
      {s.streamId && (
        <div className="streamid">
          stream <code data-testid="stream-id">{s.streamId}</code> · offset <code>{s.message.offset}</code> ·{" "}
          <a href={`#s=${s.streamId}`} target="_blank" rel="noreferrer">
            open in a new tab
          </a>
        </div>
      )}
      {s.error && (
        <div className="err" data-testid="error">
          {s.error.code}: {s.error.message}
          {s.error.code === "unauthorized" || s.error.code === "forbidden"
            ? " — enter an API key (top right)"
            : ""}
        </div>
      )}
      {s.message.error && (
        <div className="err" data-testid="stream-error">
          generation failed: {s.message.error.code}: {s.message.error.message}
        </div>
      )}
      {s.message.abort && (
        <div className="muted" data-testid="aborted">
          Stopped: {s.message.abort.reason} (by {s.message.abort.by}).
        </div>
      )}
      {s.message.reasoning && (
        <details className="reasoning">
          <summary>Reasoning</summary>
          <pre>{s.message.reasoning}</pre>
        </details>
      )}
      {/* biome-ignore lint/security/noDangerouslySetInnerHtml: rendered by marked with raw HTML escaped */}
      <article className="answer" data-testid="answer" dangerouslySetInnerHTML={{ __html: html }} />
      {s.message.toolCalls.map((c) => (
        <pre key={c.id} className="toolcall">
          {c.name}({c.argsText})
        </pre>
      ))}
      {s.message.usage && (
        <div className="usage" data-testid="usage">
          usage: {s.message.usage.input_tokens} in / {s.message.usage.output_tokens} out
          {s.message.finishReason ? ` · finish: ${s.message.finishReason}` : ""}
        </div>
      )}
    </div>
  );
}
