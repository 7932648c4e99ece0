/**
 * @module
 * Where `models.yaml` comes from in static mode: the file `--models-file`, re-read
 * when its directory changes (which also catches the symlink swap of a mounted
 * ConfigMap). Each document read goes to the reconciler as text.
 */

import { logger } from "../obs/log.ts";

const log = logger("config");

/** A document read, or why there is none. */
export type ConfigText =
  | { text: string; key: string; source: string }
  | { missing: string; source: string };

/** Reads `path` now and again whenever its directory changes, until stopped. */
export class ModelsFileSource {
  readonly #path: string;
  readonly #onText: (text: ConfigText) => void;
  #watcher: Deno.FsWatcher | undefined;
  #running: Promise<void> | undefined;
  #last: string | undefined;
  #pending: ReturnType<typeof setTimeout> | undefined;

  constructor(path: string, onText: (text: ConfigText) => void) {
    this.#path = path;
    this.#onText = onText;
  }

  /** Reads the file once and starts watching it. */
  async start(): Promise<void> {
    await this.read();
    const dir = this.#path.includes("/")
      ? this.#path.slice(0, this.#path.lastIndexOf("/")) || "/"
      : ".";
    try {
      this.#watcher = Deno.watchFs(dir, { recursive: false });
    } catch (error) {
      log.warn(
        "cannot watch {dir} for changes ({error}); the file is re-read every sync interval",
        {
          dir,
          error: String(error),
        },
      );
      return;
    }
    this.#running = (async () => {
      for await (const _event of this.#watcher!) {
        // An editor's save or a ConfigMap update is a burst of events: read once after it.
        clearTimeout(this.#pending);
        this.#pending = setTimeout(() => void this.read(), 100);
      }
    })();
  }

  /** Reads the file and hands it on when it changed. */
  async read(): Promise<void> {
    const source = `file ${this.#path}`;
    let text: string;
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? "does not exist"
        : `cannot be read: ${error instanceof Error ? error.message : error}`;
      const missing = `${this.#path} ${reason}`;
      if (this.#last !== missing) this.#onText({ missing, source });
      this.#last = missing;
      return;
    }
    if (text === this.#last) return;
    this.#last = text;
    this.#onText({ text, key: this.#path.slice(this.#path.lastIndexOf("/") + 1), source });
  }

  async stop(): Promise<void> {
    clearTimeout(this.#pending);
    this.#watcher?.close();
    await this.#running;
  }
}
