import { SluiceError } from "@sluice/protocol";

export type Role = "admin" | "producer" | "reader";

/** What a request may do. Stream actions are checked against the stream's tenant too. */
export type Action =
  | "start"
  | "read"
  | "info"
  | "cancel"
  | "delete"
  | "list"
  | "append"
  | "create"
  | "mint_token"
  | "admin";

/** Who is asking: an API key, a read token scoped to one stream, or anyone (open mode, loopback only). */
export type Principal =
  | { kind: "key"; keyId: string; role: Role; tenant: string }
  | { kind: "token"; stream: string; tenant: string | undefined; scopes: string[]; tokenId: string }
  | { kind: "open"; role: "admin"; tenant: undefined };

export const OPEN_PRINCIPAL: Principal = { kind: "open", role: "admin", tenant: undefined };

const ROLE_ACTIONS: Record<Role, ReadonlySet<Action>> = {
  admin: new Set<Action>([
    "start",
    "read",
    "info",
    "cancel",
    "delete",
    "list",
    "append",
    "create",
    "mint_token",
    "admin",
  ]),
  producer: new Set<Action>(["start", "read", "info", "cancel", "list", "append", "create", "mint_token"]),
  reader: new Set<Action>(["read", "info", "list"]),
};

/** The tenant a principal's new streams belong to (undefined in open mode). */
export function tenantOf(p: Principal): string | undefined {
  return p.tenant;
}

/** Throws 403 unless the principal's role (or token scope) allows the action at all. */
export function requireAction(p: Principal, action: Action): void {
  if (p.kind === "open") return;
  if (p.kind === "key") {
    if (!ROLE_ACTIONS[p.role].has(action)) {
      throw new SluiceError("forbidden", `a ${p.role} key may not ${action.replace("_", " ")}`);
    }
    return;
  }
  // A read token: only read/info (and cancel when its scope says so) on its own stream.
  const allowed =
    action === "read" || action === "info"
      ? p.scopes.includes("read")
      : action === "cancel" && p.scopes.includes("cancel");
  if (!allowed) throw new SluiceError("forbidden", `a read token does not allow ${action.replace("_", " ")}`);
}

/**
 * Checks an action on one stream. A stream of another tenant (or, for a token, any other
 * stream) answers exactly like a stream that does not exist: nothing leaks.
 */
export function requireStreamAccess(
  p: Principal,
  action: Action,
  stream: { id: string; tenant?: string | undefined } | undefined,
): void {
  if (!stream) throw new SluiceError("stream_not_found", "no stream with that id");
  if (p.kind === "token") {
    if (p.stream !== stream.id || (p.tenant ?? undefined) !== (stream.tenant ?? undefined)) {
      throw new SluiceError("stream_not_found", "no stream with that id");
    }
  } else if (p.kind === "key" && stream.tenant !== p.tenant) {
    throw new SluiceError("stream_not_found", "no stream with that id");
  }
  requireAction(p, action);
}
