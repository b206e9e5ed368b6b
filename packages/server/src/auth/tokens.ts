import { randomBytes, randomUUID } from "node:crypto";
import { SluiceError } from "@sluice/protocol";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";

export interface TokenSecret {
  id: string;
  secret: Uint8Array;
}

export interface ReadTokenClaims {
  stream: string;
  tenant: string | undefined;
  scopes: string[];
  tokenId: string;
  expiresAt: number;
}

const ISSUER = "sluice";
const AUDIENCE = "sluice:stream";

/**
 * Short-lived read tokens scoped to one stream (HS256 JWTs via jose). The first secret
 * signs; every configured secret verifies (selected by `kid`), so a key rotates without
 * downtime: add the new secret first, keep the old one until its tokens have expired.
 * Only HS256 is accepted: `alg: none` and algorithm confusion are refused by jose.
 */
export class TokenIssuer {
  private readonly byId: Map<string, Uint8Array>;

  constructor(
    private readonly secrets: TokenSecret[],
    readonly defaultTtlS: number,
  ) {
    if (secrets.length === 0) throw new Error("TokenIssuer needs at least one secret");
    this.byId = new Map(secrets.map((s) => [s.id, s.secret]));
  }

  /** A process-local random secret, for single-node setups without a configured one. */
  static ephemeral(ttlS: number): TokenIssuer {
    return new TokenIssuer([{ id: "ephemeral", secret: randomBytes(32) }], ttlS);
  }

  async mint(
    stream: string,
    tenant: string | undefined,
    scopes: string[],
    ttlS = this.defaultTtlS,
  ): Promise<{ token: string; expires_at: string }> {
    const signer = this.secrets[0] as TokenSecret;
    const now = Math.floor(Date.now() / 1000);
    const exp = now + Math.max(1, Math.floor(ttlS));
    const jwt = new SignJWT({ scp: scopes, ...(tenant !== undefined ? { ten: tenant } : {}) })
      .setProtectedHeader({ alg: "HS256", kid: signer.id, typ: "JWT" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(stream)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .setJti(randomUUID());
    return { token: await jwt.sign(signer.secret), expires_at: new Date(exp * 1000).toISOString() };
  }

  async verify(token: string): Promise<ReadTokenClaims> {
    if (token.length > 4096) throw new SluiceError("unauthorized", "the token is not valid");
    try {
      const { payload } = await jwtVerify(
        token,
        async (header) => {
          const secret = header.kid !== undefined ? this.byId.get(header.kid) : undefined;
          if (!secret) throw new SluiceError("unauthorized", "the token was signed with an unknown key");
          return secret;
        },
        { algorithms: ["HS256"], issuer: ISSUER, audience: AUDIENCE, requiredClaims: ["sub", "exp"] },
      );
      const scopes = Array.isArray(payload.scp)
        ? payload.scp.filter((s): s is string => typeof s === "string")
        : [];
      return {
        stream: String(payload.sub),
        tenant: typeof payload.ten === "string" ? payload.ten : undefined,
        scopes,
        tokenId: String(payload.jti ?? ""),
        expiresAt: (payload.exp as number) * 1000,
      };
    } catch (err) {
      if (err instanceof SluiceError) throw err;
      if (err instanceof joseErrors.JWTExpired)
        throw new SluiceError("unauthorized", "the token has expired");
      throw new SluiceError("unauthorized", "the token is not valid");
    }
  }
}
