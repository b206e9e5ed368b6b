import { SluiceError } from "@sluice/protocol";
import type { FastifyReply, FastifyRequest } from "fastify";
import { isGeneration, META } from "./protocol.js";

import type { DsState } from "./state.js";

/** DELETE: remove a stream (kept as gone while forks inherit from it). */
export async function handleDelete(st: DsState, req: FastifyRequest, reply: FastifyReply) {
  const { store, locked, liveRefs, hardDelete, storeIdFor, allow, load, pathOf } = st;
  const path = pathOf(req);
  const id = await storeIdFor(req.principal, path);
  return locked(id, async () => {
    const info = await load(id, path, allow(req.principal, "delete"));
    if (isGeneration(info)) {
      throw new SluiceError(
        "stream_read_only",
        `${path} is a generation stream: delete it through /v1/streams`,
      );
    }
    if ((await liveRefs(info)).length > 0) {
      // Forks inherit from it: the name stays taken (410) until the last fork is gone.
      await store.update(id, { metadata: { [META.deleted]: true } });
    } else {
      await hardDelete(info);
    }
    return reply.code(204).send();
  });
}
