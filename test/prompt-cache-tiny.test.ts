// Every prompt-cache tier gives the cold answer on the tiny model (test/helpers/prompt-cache.ts).
import { SAMPLINGS, tierTest } from "./helpers/prompt-cache.js";

tierTest("tiny", SAMPLINGS.filter((s) => s.name === "seeded"));
