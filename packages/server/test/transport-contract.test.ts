import { DOORS } from "./doors.js";
import { runTransportContract } from "./transport-contract.js";

// The transport contract (transport-contract.ts) against every door onto the log.
for (const door of DOORS) runTransportContract(door);
