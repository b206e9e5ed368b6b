import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Dashboard } from "./Dashboard.js";
import { Playground } from "./Playground.js";
import "./styles.css";

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
