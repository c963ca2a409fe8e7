// Real parts for the end-to-end tests: the server binary, redis-server on
// free ports in temp dirs, and Debian's Chromium driven by playwright-core.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';

const repo = resolve(import.meta.dirname, '../../../..');
/** The server binary `cargo test` built (override with SYNCKAIROS_BIN). */
export const BINARY = process.env.SYNCKAIROS_BIN ?? join(repo, 'target/debug/synckairos');
/** Screenshots land here. */
export const OUTPUT = resolve(import.meta.dirname, '../../test-output');
mkdirSync(OUTPUT, { recursive: true });

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

/** Polls `ok` every 50 ms until it holds, failing after `timeoutMs`. */
export async function until(what: string, ok: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A redis-server on its own port and directory, persisting every write
 * (appendfsync always) so a restart keeps the sessions. */
export class Redis {
  private proc?: ChildProcess;
  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(): Promise<Redis> {
    const r = new Redis(await freePort(), mkdtempSync(join(tmpdir(), 'sk-e2e-redis-')));
    await r.run();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private async run(): Promise<void> {
    this.proc = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '',
        '--appendonly', 'yes', '--appendfsync', 'always'],
      { stdio: 'ignore' },
    );
    await until('redis to answer', () => this.ping());
  }

  private ping(): boolean {
    const r = spawnSync('redis-cli', ['-p', String(this.port), 'ping'], { encoding: 'utf8' });
    return r.stdout.trim() === 'PONG';
  }

  /** Stops the server (it answers nothing meanwhile). */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.run();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One SyncKairos instance: the real binary on a free port. */
export class Instance {
  private constructor(
    readonly base: string,
    private readonly proc: ChildProcess,
  ) {}

  static async start(env: Record<string, string> = {}): Promise<Instance> {
    const port = await freePort();
    const proc = spawn(BINARY, [], {
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), RUST_LOG: 'warn', ...env },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const instance = new Instance(`http://127.0.0.1:${port}`, proc);
    await until(`${BINARY} on ${port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`${BINARY} exited with ${proc.exitCode}`);
      return fetch(`${instance.base}/health`).then((r) => r.ok, () => false);
    });
    return instance;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await exited;
  }
}

/** Headless Debian Chromium (no browser download), flags for a closed network. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A page that fails the test on any script error. */
export async function demoPage(browser: Browser, url: string, errors: string[]): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
  page.on('pageerror', (e) => errors.push(`${url}: ${e.message}`));
  await page.goto(url);
  return page;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(OUTPUT, `${name}.png`) });
}
