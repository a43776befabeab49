// Every prompt-cache tier gives the cold answer on the scripted model (test/helpers/prompt-cache.ts).
import { tierTest } from "./helpers/prompt-cache.js";

tierTest("scripted");
