// Every prompt-cache tier gives the cold answer on the scripted model (test/helpers/prompt-cache.ts).
import { SAMPLINGS, tierTest } from "./helpers/prompt-cache.js";

tierTest("scripted", SAMPLINGS.filter((s) => s.name === "greedy"));
