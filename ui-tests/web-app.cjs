// The web app in a real browser: Debian's chromium driven by npm's
// playwright-core, against the stack `bash scripts/dev.sh` started.
// Run by scripts/dev-smoke.sh (so by scripts/test.sh); screenshots of each
// page go to $KUBECHAT_UI_OUT. Exits non-zero on the first failed check.
'use strict';
const path = require('path');
const http = require('http');
const fs = require('fs');
const os = require('os');
const { spawn } = require('child_process');
const { chromium } = require(path.join(process.env.KUBECHAT_UI_NODE, 'node_modules', 'playwright-core'));

const URL_ = process.env.KUBECHAT_UI_URL; // https://127.0.0.1:PORT
const ADMIN = process.env.KUBECHAT_UI_ADMIN_TOKEN; // a tenant admin's API token
const VIEWER = process.env.KUBECHAT_UI_VIEWER_TOKEN; // a tenant viewer's
const PLATFORM = process.env.KUBECHAT_UI_PLATFORM_TOKEN; // the platform admin's
const CLUSTER = process.env.KUBECHAT_UI_CLUSTER; // the cluster id
const OUT = process.env.KUBECHAT_UI_OUT; // screenshots
const TIMEOUT = 30000;
let passed = 0;

function check(name, ok, detail) {
  if (!ok) {
    console.log(`FAILED: ${name}${detail ? ': ' + detail : ''}`);
    throw new Error(name);
  }
  passed += 1;
  console.log(`ok: ${name}`);
}

// Every page shot is also checked by axe-core (WCAG 2.1 A and AA rules);
// any finding fails the run at the end; all are written to accessibility.json.
const AXE = fs.readFileSync(path.join(process.env.KUBECHAT_UI_NODE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const a11y = [];
let a11yPages = 0;

async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
  // Evaluated through the driver, so the page's CSP (script-src 'self') stays as it is.
  await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  a11yPages += 1;
  for (const v of found) a11y.push({ page: name, ...v });
}

async function signIn(browser, token, viewport) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: viewport || { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(`${URL_}/ui/`);
  await page.waitForURL(/\/ui\/login$/);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  try {
    await page.waitForURL(/\/ui\/$/);
  } catch (e) {
    throw new Error(`sign-in did not reach /ui/: at ${page.url()}: ${(await page.locator('body').innerText()).slice(0, 500)}`);
  }
  return { context, page };
}

/** Sends a line in the chat and waits for its answer (the newest turn). */
async function ask(page, line) {
  current = page;
  const before = await page.locator('#transcript article').count();
  await page.getByLabel('Ask in English, or type a kubectl command').fill(line);
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('#transcript article').nth(before).waitFor();
  return page.locator('#transcript article').nth(before);
}

/** A page on another origin that posts a form to the chat as soon as it loads. */
function hostileSite() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><title>evil</title>
        <form id="f" method="post" action="${URL_}/ui/clusters/${CLUSTER}/commands">
          <input name="csrf" value="guessed"><input name="line" value="kubectl scale deployment api -n web --replicas=7">
        </form>
        <script>
          const es = new EventSource(${JSON.stringify(URL_ + '/ui/clusters/' + CLUSTER)}, { withCredentials: true });
          // Its EventSource is refused by Origin (tests/tests/web.rs shows the
          // 403 on the wire; a page cannot read it), then the form is posted.
          es.onerror = () => { es.close(); document.getElementById('f').submit(); };
        </script>`);
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

let agent = null;
let current = null; // the page last asked, shot if a check fails

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.KUBECHAT_CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    // Sign in: the clusters page, the cluster connected.
    const loginCtx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const login = await loginCtx.newPage();
    login.setDefaultTimeout(TIMEOUT);
    await login.goto(`${URL_}/ui/login`);
    await shot(login, '01-login');
    // Self-service sign-up (the dev stack opens it): a new organisation,
    // its admin signed in at once, the token shown once.
    await login.getByRole('link', { name: 'Create your organisation' }).click();
    await login.getByLabel('Organisation').fill('Gamma Labs');
    await login.getByLabel('Short name').fill(`gamma-${Date.now() % 100000}`);
    await login.getByLabel('Your email').fill('gil@gamma.example');
    await login.getByRole('button', { name: 'Create organisation' }).click();
    const welcomeToken = (await login.getByTestId('new-token').innerText()).trim();
    check('sign-up creates an organisation and shows its token once', /^kc_[0-9a-f]{40}$/.test(welcomeToken), welcomeToken.slice(0, 3));
    await shot(login, '01a-signup-welcome');
    await login.getByTestId('next').click();
    await login.getByRole('heading', { name: 'Clusters of Gamma Labs' }).waitFor();
    check('the new admin is signed in to their own, empty organisation', (await login.locator('tr[data-cluster]').count()) === 0);
    await loginCtx.close();
    const { context, page } = await signIn(browser, ADMIN);
    const row = page.locator(`tr[data-cluster="${CLUSTER}"]`);
    await row.getByText('connected', { exact: true }).waitFor();
    check('signed in, the cluster is connected', true);
    await shot(page, '02-clusters');
    // Onboarding: add a cluster, copy its helm command, and the page turns
    // "connected" by itself once the agent enrolls (started here with the
    // command's one-time token, as the chart would run it).
    await page.getByLabel(/^Add a cluster/).fill('staging');
    await page.getByRole('button', { name: 'Add cluster' }).click();
    await page.getByRole('heading', { name: 'Connect staging' }).waitFor();
    const helm = await page.getByTestId('helm').innerText();
    const bootstrap = (helm.match(/kcb_[A-Za-z0-9_-]+/) || [])[0];
    check('adding a cluster shows its helm command with a one-time token', /helm (upgrade --install|install)/.test(helm) && bootstrap, helm.slice(0, 200));
    check('the page waits for the agent', /waiting for the agent/.test(await page.getByTestId('status').innerText()));
    await shot(page, '02a-connect-waiting');
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'kubechat-ui-agent-'));
    agent = spawn(process.env.KUBECHAT_UI_AGENT_BIN, ['--control-plane', URL_, '--control-plane-ca', process.env.KUBECHAT_UI_CA,
      '--state-dir', state, '--admin-listen', '127.0.0.1:0', '--kubeconfig', process.env.KUBECHAT_UI_KUBECONFIG],
      { env: { ...process.env, KUBECHAT_BOOTSTRAP_TOKEN: bootstrap }, stdio: ['ignore', 'ignore', fs.openSync(path.join(OUT, 'staging-agent.log'), 'w')] });
    await page.getByTestId('status').getByText('connected', { exact: true }).waitFor({ timeout: 60000 });
    check('the page turned "connected" once the agent enrolled', true);
    await shot(page, '02b-connect-connected');
    await page.getByRole('link', { name: /^Open the chat with staging/ }).click();
    const first = await ask(page, 'kubectl get namespaces');
    check('a first command on the new cluster', /\bweb\b/.test(await first.innerText()), await first.innerText());
    // Its settings: a policy saved, then the cluster deleted by typing its name.
    await page.getByTestId('settings').click();
    await page.getByLabel('Resources nobody may touch').fill('secrets, pods/exec');
    await page.getByRole('button', { name: 'Save policy' }).click();
    await page.getByTestId('saved').waitFor();
    check('a cluster policy is saved from its settings page', (await page.getByLabel('Resources nobody may touch').inputValue()) === 'secrets, pods/exec');
    await shot(page, '02c-cluster-settings');
    await page.getByLabel('Type staging to confirm').fill('staging');
    await page.getByRole('button', { name: 'Delete staging' }).click();
    await page.waitForURL(/\/ui\/$/);
    check('a cluster is deleted once its name is typed back', (await page.locator('tr[data-cluster]').filter({ hasText: 'staging' }).count()) === 0);
    await page.goto(`${URL_}/ui/`);

    const cookies = await context.cookies();
    const c = cookies.find((x) => x.name === '__Host-kubechat');
    check('the session cookie is Secure, HttpOnly, SameSite=Strict', c && c.secure && c.httpOnly && c.sameSite === 'Strict', JSON.stringify(c));

    // Chat: a kubectl read, an English read, a write with its dry run and confirmation.
    await row.getByRole('link').click();
    await page.waitForURL(new RegExp(`/ui/clusters/${CLUSTER}$`));
    let turn = await ask(page, 'kubectl get pods -n web');
    check('get pods shows a table of pods', (await turn.locator('table tbody tr').count()) > 0 && /api-/.test(await turn.innerText()));
    // A pod's name is a deep link: it fills the box with that pod's own read, which runs once sent.
    const podLink = turn.locator('table tbody td a').first();
    const podName = (await podLink.innerText()).trim();
    await podLink.click();
    await page.waitForURL(/\?q=/);
    check("a pod's deep link puts its read in the box and runs nothing", (await page.getByLabel('Ask in English, or type a kubectl command').inputValue()) === `kubectl get pods ${podName} -n web -o yaml`
      && (await page.locator('#transcript article').count()) === 0);
    await page.getByRole('button', { name: 'Send' }).click();
    turn = page.locator('#transcript article').last();
    await turn.waitFor();
    await turn.getByText(`name: ${podName}`).first().waitFor();
    check("the pod's own read shows it", /kind: Pod/.test(await turn.innerText()), (await turn.innerText()).slice(0, 300));
    turn = await ask(page, 'show deployments in web');
    const english = await turn.innerText();
    check('an English read shows its command and result', english.includes('kubectl get deployments -n web') && /frontend/.test(english), english);
    turn = await ask(page, 'scale deployment api in web to 2');
    const plan = await turn.innerText();
    check('a scale shows its server-side dry run', /Dry run/.test(plan) && /spec\.replicas: \d+ → 2/.test(plan), plan);
    await shot(page, '03-chat-plan');
    await turn.getByRole('button', { name: /^Confirm/ }).click();
    await turn.getByText('Done:').waitFor();
    check('the confirmed scale is done', true);
    turn = await ask(page, 'kubectl get deployment api -n web');
    check('the deployment has 2 replicas', /2\/2|\b2\b/.test(await turn.innerText()), await turn.innerText());
    await shot(page, '04-chat-done');

    // logs -f streams into the page over Server-Sent Events until stopped.
    const pods = await ask(page, 'kubectl get pods -n web');
    const pod = (await pods.locator('section.result tbody tr td').first().innerText()).trim();
    turn = await ask(page, `kubectl logs -f ${pod} -n web`);
    const lines = turn.locator('pre.lines');
    await page.waitForFunction((el) => el.textContent.split('\n').filter(Boolean).length >= 2, await lines.elementHandle());
    check('logs -f streams lines into the page', true);
    await turn.getByRole('button', { name: 'Stop' }).click();
    await turn.locator('.stream-status', { hasText: 'Stream ended: stopped' }).waitFor();
    const count = (await lines.innerText()).split('\n').filter(Boolean).length;
    check('the stream stops when asked', count >= 2, `${count} lines`);
    await shot(page, '04b-logs-stream-stopped');

    // Audit: the verified chain.
    await page.getByRole('link', { name: 'Audit' }).click();
    const chain = page.getByTestId('chain');
    check('the audit page shows the verified chain', /^Chain verified/.test(await chain.innerText()), await chain.innerText());
    await shot(page, '05-audit');
    await page.getByLabel('Kind').selectOption('chat');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/kind=chat/);
    const kinds = await page.locator('[data-testid="audit-events"] tbody tr td:nth-child(3)').allInnerTexts();
    check('the audit filter shows only what it asks for', kinds.length > 0 && kinds.every((k) => k === 'chat'), JSON.stringify(kinds.slice(0, 5)));
    check('the export link carries the filter', /\/ui\/audit\/export\?.*kind=chat/.test(await page.getByTestId('export').getAttribute('href')));
    await shot(page, '05a-audit-filtered');

    // People and tokens: a new token is shown once.
    await page.getByRole('link', { name: 'People and tokens' }).click();
    await page.getByLabel(/^New API token/).fill('ui-test');
    await page.getByRole('button', { name: 'Create token' }).click();
    const created = await page.getByTestId('new-token').innerText();
    check('a new API token is shown once', /^kc_[0-9a-f]{40}$/.test(created.trim()) && /viewer@demo\.example/.test(await page.locator('body').innerText()), created);
    await page.getByLabel('Their email').fill('sre@partner.example');
    await page.getByLabel(/^Their tenant/).fill('partner');
    await page.getByLabel('Role here').selectOption('tenant_viewer');
    await page.getByRole('button', { name: 'Grant access' }).click();
    const access = await page.getByTestId('access').innerText();
    check('an admin grants a person of another tenant a role', /sre@partner\.example\s+partner\s+tenant viewer/.test(access), access);
    await shot(page, '05b-people-tokens');

    // Usage and billing: commands against the quota, the invoice, an upgrade.
    await page.getByRole('link', { name: 'Usage and billing' }).click();
    const commands = await page.getByTestId('commands').innerText();
    check('usage shows commands against the quota', /kubectl commands\s+\d+ of 100,000/.test(commands), commands);
    check("this month's invoice is shown", /Total\s+\$\d/.test(await page.getByTestId('invoice').innerText()));
    await shot(page, '05c-billing');
    await page.getByRole('button', { name: /^Upgrade to enterprise/ }).click();
    await page.getByTestId('plan').getByText('enterprise', { exact: true }).waitFor();
    check('an upgrade takes effect at once', (await page.getByRole('button', { name: /^Upgrade to/ }).count()) === 0);

    // Phone width.
    const phone = await signIn(browser, ADMIN, { width: 390, height: 844 });
    await phone.page.goto(`${URL_}/ui/clusters/${CLUSTER}`);
    check('the chat page offers your recent lines again', /scale deployment api in web to 2/.test(await phone.page.getByTestId('history').innerText()));
    await ask(phone.page, 'show pods in web');
    await shot(phone.page, '06-chat-phone');
    const overflow = await phone.page.evaluate(() => {
      const wide = [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1);
      return { px: document.documentElement.scrollWidth - window.innerWidth, wide: wide.slice(0, 5).map((e) => e.tagName + '.' + e.className) };
    });
    check('the chat reads at phone width (no sideways scrolling of the page)', overflow.px <= 1, JSON.stringify(overflow));
    await phone.context.close();

    // The platform admin: every tenant, revenue, every tunnel.
    const op = await signIn(browser, PLATFORM);
    const tenants = await op.page.getByTestId('tenants').innerText();
    check('the platform page lists every tenant', /Demo\s+demo\s+enterprise/.test(tenants), tenants);
    check('the platform page shows revenue and every tunnel', /^\$[\d,]+\.\d\d a month/.test(await op.page.getByTestId('mrr').innerText())
      && new RegExp(`demo\\s+${CLUSTER}`).test(await op.page.getByTestId('tunnels').innerText()));
    await shot(op.page, '09-platform');
    await op.context.close();

    // A viewer: no confirmation control, and a forged confirmation is refused.
    const viewer = await signIn(browser, VIEWER);
    check('a viewer sees no Audit link', (await viewer.page.getByRole('link', { name: 'Audit' }).count()) === 0);
    await viewer.page.goto(`${URL_}/ui/clusters/${CLUSTER}`);
    await page.goto(`${URL_}/ui/clusters/${CLUSTER}`);
    const adminPlan = await ask(page, 'kubectl scale deployment api -n web --replicas=5');
    const planId = await adminPlan.getAttribute('data-plan');
    const token = await adminPlan.locator('input[name="confirmation"]').getAttribute('value');
    const vturn = await ask(viewer.page, 'kubectl scale deployment api -n web --replicas=5');
    await shot(viewer.page, '07-viewer');
    const vtext = await vturn.innerText();
    check('a viewer gets no write control, and is told why', (await vturn.getByRole('button', { name: /^Confirm/ }).count()) === 0 && /tenant_viewer/.test(vtext), vtext);
    const csrf = await viewer.page.locator('input[name="csrf"]').first().getAttribute('value');
    const forged = await viewer.page.evaluate(async ({ u, csrf, token }) => {
      const r = await fetch(u, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, confirmation: token }) });
      return r.status + ' ' + (await r.text());
    }, { u: `${URL_}/ui/clusters/${CLUSTER}/commands/${planId}/confirm`, csrf, token });
    check("a write forged by hand with another person's confirmation is refused", /Not done/.test(forged), forged.slice(0, 200));
    await viewer.context.close();

    // Another site: its form post and EventSource are refused, nothing acts.
    const evil = await hostileSite();
    const evilUrl = `http://127.0.0.1:${evil.address().port}/`;
    const hostile = await context.newPage();
    hostile.setDefaultTimeout(TIMEOUT);
    const refused = hostile.waitForResponse((r) => r.url().endsWith('/commands') && r.request().method() === 'POST');
    await hostile.goto(evilUrl);
    const resp = await refused;
    check('a cross-site form post is refused', resp.status() === 403 && /Cross-site request refused/.test(await resp.text()), String(resp.status()));
    await shot(hostile, '08-cross-site-refused');
    evil.close();
    turn = await ask(page, 'kubectl get deployment api -n web -o json');
    check('nothing the other site sent acted', /"replicas": 2,/.test(await turn.innerText()));

    // Keyboard only: the skip link, then the chat box, a write planned and
    // confirmed without the mouse, every focused control outlined.
    await page.goto(`${URL_}/ui/clusters/${CLUSTER}`);
    current = page;
    const focused = () => page.evaluate(() => {
      const e = document.activeElement;
      const st = getComputedStyle(e);
      return { tag: e.tagName, id: e.id, text: (e.innerText || e.value || '').trim().slice(0, 60), outline: st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0 };
    });
    await page.keyboard.press('Tab');
    const skip = await focused();
    check('the first Tab reaches the skip link, outlined', /skip/i.test(skip.text) && skip.outline, JSON.stringify(skip));
    await page.keyboard.press('Enter');
    let f = await focused();
    for (let i = 0; i < 40 && f.id !== 'line'; i += 1) {
      await page.keyboard.press('Tab');
      f = await focused();
    }
    check('Tab reaches the chat box, outlined', f.id === 'line' && f.outline, JSON.stringify(f));
    const before = await page.locator('#transcript article').count();
    await page.keyboard.type('kubectl scale deployment api -n web --replicas=3');
    await page.keyboard.press('Enter');
    const kturn = page.locator('#transcript article').nth(before);
    await kturn.getByRole('button', { name: /^Confirm/ }).waitFor();
    // htmx wires new content up when it settles (and then drops `htmx-added`);
    // a key pressed before that would post the form without htmx.
    await page.waitForFunction(() => !document.querySelector('.htmx-added, .htmx-settling'));
    let reached = null;
    for (let i = 0; i < 80; i += 1) {
      await page.keyboard.press('Tab');
      f = await focused();
      if (f.tag === 'BUTTON' && /^Confirm/.test(f.text)) { reached = f; break; }
    }
    check('Tab reaches the plan\'s Confirm button, outlined', reached && reached.outline, JSON.stringify(f));
    await page.keyboard.press('Enter');
    await kturn.getByText('Done:').waitFor();
    turn = await ask(page, 'kubectl get deployment api -n web -o json');
    check('the write confirmed by keyboard is done', /"replicas": 3,/.test(await turn.innerText()), (await turn.innerText()).slice(0, 300));
    await shot(page, '04c-chat-keyboard');

    // Sign out: the old cookie is refused afterwards.
    const old = (await context.cookies()).find((x) => x.name === '__Host-kubechat');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/ui\/login$/);
    const replay = await browser.newContext({ ignoreHTTPSErrors: true });
    await replay.addCookies([old]);
    const rp = await replay.newPage();
    await rp.goto(`${URL_}/ui/`);
    check('after sign-out the old cookie is refused', /\/ui\/login$/.test(rp.url()), rp.url());
    await replay.close();
    await context.close();

    // Accessibility of every page shot above.
    fs.writeFileSync(path.join(OUT, 'accessibility.json'), JSON.stringify(a11y, null, 2));
    check(`no accessibility finding on ${a11yPages} pages (axe-core, WCAG 2.1 A and AA)`, a11y.length === 0, JSON.stringify(a11y.slice(0, 6)));
  } catch (e) {
    if (current) await current.screenshot({ path: path.join(OUT, '99-failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    if (agent) agent.kill('SIGTERM');
    await browser.close();
  }
  console.log(`ui: ${passed} passed, 0 failed (screenshots in ${OUT})`);
}

main().catch((e) => {
  console.log(`ui: FAILED after ${passed} passed: ${e.stack || e}`);
  process.exit(1);
});
