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

const detail = (page: Page, i: number) => page.textContent(`#clock-${i} .detail`);

/** Resolves once clock `i`'s line under the time shows `text`. */
async function detailShows(page: Page, i: number, text: string, timeout = 10_000): Promise<void> {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent?.includes(want),
    [`#clock-${i} .detail`, text] as const,
    { timeout },
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

  it('byo-yomi: the bank runs out into overtime, a period runs out and is lost, a move keeps the period', async () => {
    const server = await Instance.start();
    cleanup.push(() => server.stop());
    const page = await demoPage(browser, `${server.base}/demo`, errors);
    // The picker shows byo-yomi's parameters only; its defaults are 5 × 10 s.
    await page.selectOption('#control', 'byoyomi');
    expect(await page.isVisible('#periods')).toBe(true);
    expect(await page.isVisible('#increment')).toBe(false);
    expect(await page.inputValue('#periods')).toBe('5');
    expect(await page.inputValue('#byo-period')).toBe('10');
    // 2.4 s of main time, then 3 periods of 3 s.
    await page.fill('#minutes', '0.04');
    await page.fill('#periods', '3');
    await page.fill('#byo-period', '3');
    await page.click('#create-button');
    await page.waitForSelector('#connection[data-status=open]');
    await detailShows(page, 0, 'main time · then 3 × 3 s');
    expect(await page.textContent('#time-control')).toBe('Byo-yomi 3 × 3 s');
    expect(await clockText(page, 0)).toBe('0:02.4');

    await page.click('#start');
    await page.waitForSelector('#clock-0.active');
    // The bank is spent: White is in overtime, the clock shows the period.
    await detailShows(page, 0, 'overtime · 3 periods left');
    await page.waitForSelector('#clock-0.overtime[data-in-overtime=true][data-periods-left="3"]');
    await clockMoves(page, 0);
    expect(await clockText(page, 0)).toMatch(/^0:0[0-3]\.\d$/);
    await screenshot(page, 'byoyomi-overtime');
    // The first period runs out: it is lost, the next one starts.
    await detailShows(page, 0, 'overtime · 2 periods left', 5_000);
    await page.waitForSelector('#clock-0[data-periods-left="2"]');

    // White moves inside its second period: it keeps it, and its next turn
    // starts the period afresh. Black's clock runs, still in main time.
    await page.click('#switch');
    await page.waitForSelector('#clock-1.active');
    await page.waitForSelector('#clock-0:not(.active)');
    expect(await detail(page, 0)).toBe('overtime · 2 periods left');
    expect(await clockText(page, 0)).toBe('0:03.0');
    const white = await page.evaluate(() => window.synckairos.live.state!.participants[0]!);
    expect(white).toMatchObject({ bank_remaining_ms: 0, periods_left: 2, period_remaining_ms: 3_000, in_overtime: true });
    expect(white.overtime).toEqual({ periods_left: 2, period_used_ms: 0 });
    expect(await detail(page, 1)).toMatch(/^main time · then 3 × 3 s$|^overtime · 3 periods left$/);
    await detailShows(page, 1, 'overtime · 3 periods left');
    await screenshot(page, 'byoyomi-after-move');
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
