import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import { apiKey, setApiKey } from "./client.js";
import { Dashboard } from "./Dashboard.js";
import { Playground } from "./Playground.js";
import "./styles.css";

function KeyField() {
  const [key, setKey] = useState(apiKey() ?? "");
  return (
    <form
      className="keyform"
      onSubmit={(e) => {
        e.preventDefault();
        setApiKey(key.trim());
        window.location.reload();
      }}
    >
      <input
        type="password"
        placeholder="API key (if the server needs one)"
        value={key}
        onChange={(e) => setKey(e.target.value)}
        aria-label="API key"
      />
    </form>
  );
}

function App() {
  const path = window.location.pathname.replace(/\/+$/, "");
  return (
    <>
      <header className="top">
        <span className="brand">Sluice</span>
        <nav>
          <a href="/" className={path === "" ? "active" : ""}>
            Playground
          </a>
          <a href="/dashboard" className={path === "/dashboard" ? "active" : ""}>
            Dashboard
          </a>
        </nav>
        <KeyField />
      </header>
      <main>{path === "/dashboard" ? <Dashboard /> : <Playground />}</main>
    </>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
