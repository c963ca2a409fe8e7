// The demo in a real browser against real server processes: the embedded
// backend alone, then two instances sharing a Redis that restarts mid-test.

import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Instance, Redis, demoPage, launchChromium, screenshot } from './harness.js';

let browser: Browser;
const errors: string[] = [];
const cleanup: (() => Promise<void>)[] = [];

beforeAll(async () => {
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
  expect(errors, 'script errors on the page').toEqual([]);
});

/** Creates a chess clock (1 minute, 2 s increment) on the page and starts it. */
async function createAndStart(page: Page): Promise<string> {
  await page.fill('#minutes', '1');
  await page.fill('#increment', '2');
  await page.click('#create-button');
  await page.waitForSelector('#connection[data-status=open]');
  await page.click('#start');
  await page.waitForSelector('#clock-0.active');
  return page.evaluate(() => new URL(location.href).searchParams.get('session')!);
}

const clockText = (page: Page, i: number) => page.textContent(`#clock-${i} .time`);

/** Resolves once the clock shows something other than it shows now. */
async function clockMoves(page: Page, i: number): Promise<void> {
  const before = await clockText(page, i);
  await page.waitForFunction(
    ([sel, text]) => document.querySelector(sel)?.textContent !== text,
    [`#clock-${i} .time`, before] as const,
    { timeout: 5_000 },
  );
}

describe('the demo page', () => {
  it('runs a chess clock on the embedded backend', async () => {
    const server = await Instance.start();
    cleanup.push(() => server.stop());
    const page = await demoPage(browser, `${server.base}/demo`, errors);
    await createAndStart(page);
    expect(await clockText(page, 0)).toMatch(/^0:5\d$|^1:00$/);
    await clockMoves(page, 0);
    // The measured offset is shown once the first PONGs came back.
    await page.waitForFunction(() => document.querySelector('#offset')?.textContent?.includes('±'));
    await page.click('#pause');
    await page.waitForSelector('#resume:not([disabled])');
    const paused = await clockText(page, 0);
    expect(await page.locator('#clock-0').getAttribute('class')).not.toContain('active');
    await page.click('#resume');
    await page.waitForSelector('#clock-0.active');
    await screenshot(page, 'embedded-running');
    expect(paused).toMatch(/^0:\d\d/);
  });

  it('a switch on one instance moves the clock on another; a Redis restart shows reconnecting, then live clocks', async () => {
    const redis = await Redis.start();
    cleanup.push(() => redis.dispose());
    const one = await Instance.start({ REDIS_URL: redis.url });
    const two = await Instance.start({ REDIS_URL: redis.url });
    cleanup.push(() => one.stop(), () => two.stop());

    const a = await demoPage(browser, `${one.base}/demo`, errors);
    const id = await createAndStart(a);
    // Page B joins through the share link, on the other instance.
    const share = new URL((await a.getAttribute('#share', 'href'))!);
    expect(share.searchParams.get('session')).toBe(id);
    const b = await demoPage(browser, `${two.base}/demo?session=${id}`, errors);
    await b.waitForSelector('#clock-0.active');
    await clockMoves(b, 0);

    // Switch in A; B (another instance, fed through Redis) follows within 1 s.
    await a.click('#switch');
    await b.waitForSelector('#clock-1.active', { timeout: 1_000 });
    await clockMoves(b, 1);
    await screenshot(a, 'two-instances-a');
    await screenshot(b, 'two-instances-b');

    // Redis goes away: both pages say so, and keep computing their clocks.
    await redis.stop();
    for (const page of [a, b]) await page.waitForSelector('#connection[data-status=reconnecting]');
    await clockMoves(b, 1);
    await screenshot(b, 'redis-down-b');
    await redis.restart();
    for (const page of [a, b]) await page.waitForSelector('#connection[data-status=open]', { timeout: 20_000 });

    // Live again, both ways: a switch in B reaches A within 1 s. (The
    // instance may still be reconnecting its command pool: retry its 503.)
    await b.waitForFunction(() => window.synckairos.live.state?.active_participant_id);
    const version = await b.evaluate(() => window.synckairos.live.state!.version);
    await b.waitForFunction(async () => {
      const { live, client } = window.synckairos;
      try {
        await client.switch(live.state!.session_id, { expected_version: live.state!.version });
        return true;
      } catch (e) {
        if ((e as { code?: string }).code === 'SERVICE_UNAVAILABLE') return false;
        throw e;
      }
    }, undefined, { timeout: 20_000, polling: 100 });
    await a.waitForSelector('#clock-0.active', { timeout: 1_000 });
    expect(await a.evaluate(() => window.synckairos.live.state!.version)).toBe(version + 1);
    await clockMoves(a, 0);
    await screenshot(a, 'after-redis-restart-a');
  });
});

declare global {
  interface Window {
    synckairos: {
      live: import('../../src/live.js').LiveSession;
      client: import('../../src/rest.js').SyncKairosClient;
    };
  }
}
