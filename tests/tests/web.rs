//! The web app on the wire, as a browser (or a hostile page) speaks to it:
//! sign-in and a strict session cookie, logout ending the session on the
//! server, cross-site requests refused before they act, chat reads and
//! writes only on a confirmation, the audit chain shown verified. The
//! browser itself (chromium through playwright-core) is driven by the UI
//! suite; these show the server's side of each rule.

use kubechat_tests::platform::{World, world};
use kubechat_tests::web_client::{WebClient, input_value};
use serde_json::json;

async fn signed_in(w: &World, role: &str, email: &str) -> (WebClient, String) {
    let token = w.user(email, role).await;
    let mut b = WebClient::new(&w.cp_url, &w.cp_ca);
    let r = b.sign_in(&token).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/")), "{}", r.text());
    (b, token)
}

/// The id of the first token row of the people page containing `needle`.
fn token_row(page: &str, needle: &str) -> Option<String> {
    page.split("<tr data-token=\"")
        .skip(1)
        .find(|row| row.contains(needle))
        .and_then(|row| row.split('"').next())
        .map(str::to_string)
}

fn chat_path(w: &World) -> String {
    format!("/ui/clusters/{}", w.cluster)
}

async fn ask(b: &WebClient, w: &World, line: &str) -> String {
    let csrf = b.csrf(&chat_path(w)).await;
    let r = b.post(&format!("{}/commands", chat_path(w)), &[("csrf", &csrf), ("line", line)], true).await;
    assert_eq!(r.status, 200, "{line}: {}", r.text());
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_gives_a_strict_session_cookie_and_signing_out_ends_it_on_the_server() {
    let w = world(json!({})).await;
    let mut b = WebClient::new(&w.cp_url, &w.cp_ca);
    // Not signed in: every page sends you to sign in.
    let r = b.get("/ui/").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    let r = b.get("/ui/login").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("name=\"token\""), "{}", r.text());
    let csp = r.header("content-security-policy").expect("a CSP on every page");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // A wrong token: refused, no cookie.
    let r = b.sign_in("kc_0000000000000000000000000000000000000000").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("set-cookie").is_none() && b.cookie.is_none());
    assert!(r.text().contains("not valid"), "{}", r.text());

    let token = w.user("sam@acme.example", "tenant_user").await;
    let r = b.sign_in(&token).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").expect("a session cookie");
    for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.split("; ").any(|f| f == flag), "{flag} missing from {set}");
    }
    assert!(set.starts_with("__Host-kubechat=") && !set.to_ascii_lowercase().contains("domain="), "{set}");
    let cookie = b.cookie.clone().expect("kept");
    assert!(!cookie.contains(&token), "the cookie is not the token");
    // The start page lists the cluster, connected.
    let r = b.get("/ui/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(page.contains("sam@acme.example") && page.contains(">prod<"), "{page}");
    assert!(page.contains("data-testid=\"status\">connected<"), "{page}");

    // Signing out needs the page's CSRF token…
    let r = b.post("/ui/logout", &[("csrf", "forged")], false).await;
    assert_eq!(r.status, 403);
    assert_eq!(b.get("/ui/").await.status, 200, "a forged logout ended nothing");
    let csrf = b.csrf("/ui/").await;
    let r = b.post("/ui/logout", &[("csrf", &csrf)], false).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    assert!(r.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    // …and then the old cookie is refused, whoever replays it.
    let mut replay = b.clone();
    replay.cookie = Some(cookie);
    let r = replay.get("/ui/").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));

    // Revoking the token a session was opened with ends the session too.
    let mut b = WebClient::new(&w.cp_url, &w.cp_ca);
    assert_eq!(b.sign_in(&token).await.status, 303);
    assert_eq!(b.get("/ui/").await.status, 200);
    let list = w.api.get(&format!("/v1/tenants/{}/tokens", w.tenant)).await.expect("reach");
    let id = list.body["items"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| token.starts_with(t["prefix"].as_str().unwrap_or("-")) && t["revokedAt"].is_null())
        .and_then(|t| t["id"].as_str())
        .expect("the token is listed")
        .to_string();
    let r = w.api.delete(&format!("/v1/tenants/{}/tokens/{id}", w.tenant)).await.expect("reach");
    assert!(r.status < 300, "{}", r.body);
    let r = b.get("/ui/").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_never_act() {
    let w = world(json!({})).await;
    let (b, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let path = format!("{}/commands", chat_path(&w));
    let csrf = b.csrf(&chat_path(&w)).await;
    let line = "kubectl scale deployment api -n web --replicas=4";
    // A form on another site, posted with the (SameSite-ignoring) cookie.
    for headers in [
        vec![("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", "https://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", "null")],
        vec![],
    ] {
        let r = b.post_with(&path, &[("csrf", &csrf), ("line", line)], &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        assert!(r.text().contains("Cross-site request refused"), "{}", r.text());
    }
    // Same origin but without, or with another session's, CSRF token.
    let r = b.post(&path, &[("line", line)], true).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let (other, _) = signed_in(&w, "tenant_admin", "bob@acme.example").await;
    let theirs = other.csrf("/ui/").await;
    let r = b.post(&path, &[("csrf", &theirs), ("line", line)], true).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A foreign page's EventSource or WebSocket handshake is refused too.
    for headers in [
        vec![("Origin", "https://evil.example"), ("Accept", "text/event-stream")],
        vec![
            ("Origin", "https://evil.example"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    ] {
        let r = b.get_with(&chat_path(&w), &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
    }
    // A cross-site sign-in (login CSRF) is refused as well.
    let fresh = WebClient::new(&w.cp_url, &w.cp_ca);
    let r = fresh.post_with("/ui/login", &[("token", "kc_x")], &[("Origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403);
    // None of it acted: no plan was made, the deployment is as it was.
    let page = ask(&b, &w, "kubectl get deployment api -n web -o json").await;
    assert!(page.contains("&quot;replicas&quot;: 1,") || page.contains("\"replicas\": 1,"), "{page}");
    let audit = w.api.get(&format!("/v1/tenants/{}/audit?kind=chat", w.tenant)).await.expect("reach");
    let steps = audit.body["items"].as_array().cloned().unwrap_or_default();
    assert!(!steps.iter().any(|e| e.to_string().contains("--replicas=4")), "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_the_browser_reads_at_once_and_writes_only_on_confirmation() {
    let w = world(json!({})).await;
    let (b, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    // A kubectl read: the table, with the pods.
    let page = ask(&b, &w, "kubectl get pods -n web").await;
    assert!(page.contains("<table") && page.contains(&w.pod("web", "api-")), "{page}");
    assert!(page.contains("data-testid=\"kubectl\">kubectl get pods -n web<"), "{page}");
    // Each pod links to itself: a deep link that puts its own `get` in the box.
    let pod = w.pod("web", "api-");
    assert!(
        page.contains(&format!("href=\"/ui/clusters/{}?q=kubectl+get+pods+{pod}+-n+web+-o+yaml\"", w.cluster)),
        "{page}"
    );
    // English: the command it stands for, always shown, and the result.
    let page = ask(&b, &w, "show deployments in web").await;
    assert!(page.contains("kubectl get deployments -n web") && page.contains(">api<"), "{page}");
    // A deep link puts a command in the box; a GET never runs it.
    let r = b.get(&format!("{}?q=kubectl+delete+pods+--all+-n+web", chat_path(&w))).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("value=\"kubectl delete pods --all -n web\""), "{}", r.text());
    assert!(!r.text().contains("name=\"confirmation\""));

    // A write: the dry run's diff and a confirmation form; nothing changed.
    let page = ask(&b, &w, "scale deployment api in web to 3").await;
    assert!(page.contains("kubectl scale deployments api -n web --replicas=3"), "{page}");
    assert!(page.contains("Dry run") && page.contains("replicas: 1 → 3"), "{page}");
    let confirmation = input_value(&page, "confirmation").expect("a confirmation form");
    let plan = page.split("data-plan=\"").nth(1).and_then(|s| s.split('"').next()).expect("plan id").to_string();
    let now = ask(&b, &w, "kubectl get deployment api -n web -o json").await;
    assert!(now.contains("&quot;replicas&quot;: 1,"), "unchanged before the confirmation: {now}");
    // Confirmed: done, once.
    let csrf = b.csrf(&chat_path(&w)).await;
    let confirm = format!("{}/commands/{plan}/confirm", chat_path(&w));
    let r = b.post(&confirm, &[("csrf", &csrf), ("confirmation", &confirmation)], true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Done:"), "{}", r.text());
    let now = ask(&b, &w, "kubectl get deployment api -n web -o json").await;
    assert!(now.contains("&quot;replicas&quot;: 3,"), "{now}");
    let r = b.post(&confirm, &[("csrf", &csrf), ("confirmation", &confirmation)], true).await;
    assert!(r.text().contains("Not done:"), "a confirmation is single-use: {}", r.text());

    // A destructive command needs the name typed back.
    let page = ask(&b, &w, "kubectl delete deployment api -n web").await;
    assert!(page.contains("Type <strong>api</strong> to confirm"), "{page}");
    let confirmation = input_value(&page, "confirmation").expect("a confirmation form");
    let plan = page.split("data-plan=\"").nth(1).and_then(|s| s.split('"').next()).expect("plan id").to_string();
    let confirm = format!("{}/commands/{plan}/confirm", chat_path(&w));
    let r = b.post(&confirm, &[("csrf", &csrf), ("confirmation", &confirmation), ("typed_name", "ap")], true).await;
    assert!(r.text().contains("Not done:"), "{}", r.text());
    let now = ask(&b, &w, "kubectl get deployments -n web").await;
    assert!(now.contains(">api<"), "still there: {now}");

    // A viewer gets no confirmation form: the plan itself is refused.
    let (v, _) = signed_in(&w, "tenant_viewer", "vic@acme.example").await;
    let page = ask(&v, &w, "kubectl scale deployment api -n web --replicas=5").await;
    assert!(!page.contains("name=\"confirmation\""), "{page}");
    assert!(page.contains("refused"), "{page}");
    // And a write forged by hand with someone else's confirmation is refused.
    let page = ask(&b, &w, "kubectl scale deployment api -n web --replicas=6").await;
    let confirmation = input_value(&page, "confirmation").expect("a confirmation form");
    let plan = page.split("data-plan=\"").nth(1).and_then(|s| s.split('"').next()).expect("plan id").to_string();
    let vcsrf = v.csrf(&chat_path(&w)).await;
    let r = v
        .post(
            &format!("{}/commands/{plan}/confirm", chat_path(&w)),
            &[("csrf", &vcsrf), ("confirmation", &confirmation)],
            true,
        )
        .await;
    assert!(r.text().contains("Not done:"), "{}", r.text());
    let now = ask(&b, &w, "kubectl get deployment api -n web -o json").await;
    assert!(now.contains("&quot;replicas&quot;: 3,"), "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_shows_the_verified_chain_to_admins_only() {
    let w = world(json!({})).await;
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    ask(&admin, &w, "kubectl get pods -n web").await;
    let r = admin.get("/ui/audit").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(page.contains("data-testid=\"chain\" role=\"status\">Chain verified:"), "{page}");
    assert!(page.contains("ada@acme.example"), "{page}");
    assert!(page.contains("href=\"/ui/audit\""), "admins see the Audit link");
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    assert!(!user.get("/ui/").await.text().contains("href=\"/ui/audit\""), "a user sees no Audit link");
    assert_eq!(user.get("/ui/audit").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_add_clusters_and_the_helm_command_is_shown_once_made() {
    let w = world(json!({})).await;
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    assert!(!user.get("/ui/").await.text().contains("Add cluster"), "a user sees no Add cluster form");
    let csrf = user.csrf("/ui/").await;
    let r = user.post("/ui/clusters", &[("csrf", &csrf), ("name", "sneaky")], false).await;
    assert_eq!(r.status, 403, "a forged add is refused by the same check as the API: {}", r.text());
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    assert!(admin.get("/ui/").await.text().contains("Add cluster"));
    let csrf = admin.csrf("/ui/").await;
    let r = admin.post("/ui/clusters", &[("csrf", &csrf), ("name", "Not A Name")], false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.post("/ui/clusters", &[("csrf", &csrf), ("name", "staging")], false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(page.contains("Connect staging") && page.contains("waiting for the agent"), "{page}");
    let listed = w.api.get(&format!("/v1/tenants/{}/clusters", w.tenant)).await.expect("reach");
    let id = listed.body["items"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "staging"))
        .and_then(|c| c["id"].as_str())
        .expect("registered")
        .to_string();
    // Its status is polled until connected; the known cluster is connected.
    let r = admin.get(&format!("/ui/clusters/{id}/status")).await;
    assert!(r.text().contains("hx-trigger=\"every 2s\""), "{}", r.text());
    let r = admin.get(&format!("/ui/clusters/{}/status", w.cluster)).await;
    assert!(r.text().contains(">connected<") && !r.text().contains("hx-trigger"), "{}", r.text());
    // Another tenant's cluster id is not found, like a missing one.
    let r = admin.get("/ui/clusters/c000000000000/status").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_and_tokens_a_new_token_is_shown_once_and_revoked_by_its_owner() {
    let w = world(json!({})).await;
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    // Admins see people and roles; a user sees only their own tokens.
    let page = admin.get("/ui/people").await.text();
    assert!(page.contains("People and their roles") && page.contains("ursula@acme.example"), "{page}");
    let page = user.get("/ui/people").await.text();
    assert!(!page.contains("People and their roles") && !page.contains("ada@acme.example"), "{page}");
    // A new token: shown once, and it works.
    let csrf = user.csrf("/ui/people").await;
    let r = user.post("/ui/tokens", &[("csrf", &csrf), ("name", "laptop")], false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let secret = page
        .split("data-testid=\"new-token\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the new token is shown")
        .to_string();
    assert!(secret.starts_with("kc_"), "{secret}");
    assert!(!user.get("/ui/people").await.text().contains(&secret), "shown only once");
    let mut laptop = WebClient::new(&w.cp_url, &w.cp_ca);
    assert_eq!(laptop.sign_in(&secret).await.status, 303);
    assert_eq!(laptop.get("/ui/").await.status, 200);
    // Someone else's token is not theirs to revoke (the same 404 as a missing one).
    let page = admin.get("/ui/people").await.text();
    let admin_token = token_row(&page, "ada@acme.example").expect("the admin's token is listed");
    let r = user.post(&format!("/ui/tokens/{admin_token}/revoke"), &[("csrf", &csrf)], false).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Their own: revoked, and the session opened with it ends.
    let page = user.get("/ui/people").await.text();
    let laptop_id = token_row(&page, "<td>laptop</td>").expect("listed");
    let r = user.post(&format!("/ui/tokens/{laptop_id}/revoke"), &[("csrf", &csrf)], false).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/people")), "{}", r.text());
    let r = laptop.get("/ui/").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
}

/// The positions (`#`) of the audit page's rows, in page order.
fn audit_rows(page: &str) -> Vec<i64> {
    let table = page.split("data-testid=\"audit-events\"").nth(1).unwrap_or_default();
    let body = table.split("<tbody>").nth(1).and_then(|b| b.split("</tbody>").next()).unwrap_or_default();
    body.split("<tr><td>").skip(1).filter_map(|row| row.split("</td>").next()?.parse().ok()).collect()
}

/// The `href` of the element marked `data-testid="<id>"` (attributes
/// before it), HTML entities undone.
fn link(page: &str, testid: &str) -> Option<String> {
    let at = page.find(&format!("data-testid=\"{testid}\""))?;
    let start = page[..at].rfind("<a ")?;
    let href = page[start..at].split("href=\"").nth(1)?.split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_pages_newest_first_and_exports_what_it_shows() {
    let w = world(json!({})).await;
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let viewer_token = w.user("vic@acme.example", "tenant_viewer").await;
    let k = w.kubectl(&viewer_token, &w.cluster);
    for _ in 0..12 {
        k.ok(&["get", "pods", "-n", "web"]).await;
    }
    // Refused: a viewer reads no secrets.
    k.fails(&["get", "secrets", "-n", "web"]).await;
    k.fails(&["get", "secrets", "-n", "kube-system"]).await;

    // Newest first, ten a page; "Older events" continues without overlap.
    let r = admin.get("/ui/audit?limit=10").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = audit_rows(&r.text());
    assert_eq!(first.len(), 10, "{}", r.text());
    assert!(first.windows(2).all(|p| p[0] > p[1]), "newest first: {first:?}");
    let older = link(&r.text(), "older").unwrap_or_else(|| panic!("an Older link: {}", r.text()));
    assert!(older.contains("limit=10") && older.contains("before="), "{older}");
    let second = audit_rows(&admin.get(&older).await.text());
    assert!(!second.is_empty() && second[0] < *first.last().expect("rows"), "{first:?} then {second:?}");

    // Filtered: only the viewer's refusals, each one shown.
    let r = admin.get("/ui/audit?user=kubechat%3Auser%3Avic%40acme.example&decision=deny").await;
    let page = r.text();
    assert_eq!(r.status, 200, "{page}");
    let rows = audit_rows(&page);
    assert!(rows.len() >= 2, "{page}");
    assert!(page.contains("list secrets in web") && page.contains("list secrets in kube-system"), "{page}");
    assert!(!page.contains("list pods"), "a filtered page shows only what matches: {page}");
    assert!(page.contains("Clear filters") && page.contains("selected>refused<"), "{page}");

    // The export carries the same filter, as JSON Lines, every line a refusal by vic.
    let export = link(&page, "export").expect("an export link");
    assert!(export.starts_with("/ui/audit/export?") && export.contains("decision=deny"), "{export}");
    let r = admin.get(&export).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert!(r.header("content-disposition").is_some_and(|d| d.contains("kubechat-audit-acme.jsonl")));
    let lines: Vec<serde_json::Value> =
        r.text().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), rows.len(), "the export holds what the page shows");
    for e in &lines {
        assert_eq!(
            (e["decision"].as_str(), e["user"].as_str()),
            (Some("deny"), Some("kubechat:user:vic@acme.example"))
        );
    }

    // A day range: today holds them all, a day long past holds none.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let r = admin.get(&format!("/ui/audit?since={today}&until={today}&decision=deny")).await;
    assert_eq!(audit_rows(&r.text()).len(), rows.len(), "{}", r.text());
    let r = admin.get("/ui/audit?until=2001-01-01").await;
    assert!(audit_rows(&r.text()).is_empty() && r.text().contains("No event matches."), "{}", r.text());
    // Nonsense is a clear refusal, not an empty page.
    let r = admin.get("/ui/audit?since=yesterday").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("must be a date like"), "{}", r.text());
    assert_eq!(admin.get("/ui/audit?limit=100000").await.status, 400);

    // Neither the page nor its export is a non-admin's.
    let mut viewer = WebClient::new(&w.cp_url, &w.cp_ca);
    assert_eq!(viewer.sign_in(&viewer_token).await.status, 303);
    assert_eq!(viewer.get("/ui/audit").await.status, 403);
    assert_eq!(viewer.get("/ui/audit/export").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_billing_show_commands_against_the_quota_invoices_and_the_upgrade() {
    let w = world(json!({})).await;
    let (admin, token) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let k = w.kubectl(&token, &w.cluster);
    k.ok(&["get", "pods", "-n", "web"]).await;
    // The command is metered by the writer's next group commit.
    let metered =
        |page: &str| page.split("data-testid=\"commands\"").nth(1).is_some_and(|row| !row.contains("<td>0 of "));
    kubechat_tests::wait::eventually("the command metered", std::time::Duration::from_secs(10), || async {
        metered(&admin.get("/ui/billing").await.text())
    })
    .await;
    let page = admin.get("/ui/billing").await.text();
    assert!(page.contains("href=\"/ui/billing\""), "admins see the link: {page}");
    assert!(page.contains("data-testid=\"plan\">Plan: <strong>team</strong>"), "{page}");
    let commands = page.split("data-testid=\"commands\"").nth(1).expect("the commands row");
    assert!(commands.contains(" of 100,000</td>"), "{commands}");
    assert!(page.contains("data-testid=\"invoice\"") && page.contains("team plan, "), "{page}");
    assert!(page.contains("data-testid=\"invoice-total\"><strong>$99."), "{page}");
    // Months: this one and five before; another is refused.
    let months: Vec<&str> = page.split("<option value=\"").skip(1).filter_map(|o| o.split('"').next()).collect();
    assert_eq!(months.len(), 6, "{months:?}");
    assert_eq!(admin.get(&format!("/ui/billing?month={}", months[5])).await.status, 200);
    assert_eq!(admin.get("/ui/billing?month=1999-01").await.status, 404);

    // The upgrade: a forged form acts not; the real one raises the plan at once.
    let r = admin.post("/ui/billing/upgrade", &[("csrf", "forged"), ("plan", "enterprise")], false).await;
    assert_eq!(r.status, 403);
    let csrf = admin.csrf("/ui/billing").await;
    let r = admin.post("/ui/billing/upgrade", &[("csrf", &csrf), ("plan", "free")], false).await;
    assert_eq!(r.status, 400, "free is no upgrade: {}", r.text());
    let r = admin.post("/ui/billing/upgrade", &[("csrf", &csrf), ("plan", "enterprise")], false).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/billing")), "{}", r.text());
    let t = w.api.get(&format!("/v1/tenants/{}", w.tenant)).await.expect("reach");
    assert_eq!(t.body["subscription"]["plan"], "enterprise", "{}", t.body);
    let page = admin.get("/ui/billing").await.text();
    assert!(page.contains("<strong>enterprise</strong>") && !page.contains("data-testid=\"upgrade-"), "{page}");

    // Not a tenant user's page, nor their upgrade.
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    assert!(!user.get("/ui/").await.text().contains("href=\"/ui/billing\""));
    assert_eq!(user.get("/ui/billing").await.status, 403);
    let csrf = user.csrf("/ui/").await;
    let r = user.post("/ui/billing/upgrade", &[("csrf", &csrf), ("plan", "enterprise")], false).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_settings_set_the_policy_kubectl_obeys_and_delete_needs_the_name() {
    let w = world(json!({})).await;
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let settings = format!("/ui/clusters/{}/settings", w.cluster);
    assert!(admin.get(&chat_path(&w)).await.text().contains(&format!("href=\"{settings}\"")));
    let csrf = admin.csrf(&settings).await;
    let policy = format!("/ui/clusters/{}/policy", w.cluster);

    // A namespace that cannot exist: refused on the form, nothing saved.
    let r = admin
        .post(
            &policy,
            &[("csrf", &csrf), ("allowed_namespaces", "web, Not_A_Namespace"), ("denied_resources", "")],
            false,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("is not a namespace name") && r.text().contains("Not_A_Namespace"), "{}", r.text());
    // Read-only, web only, no configmaps: saved, and kubectl meets it at once.
    let r = admin
        .post(
            &policy,
            &[("csrf", &csrf), ("read_only", "on"), ("allowed_namespaces", "web"), ("denied_resources", "configmaps")],
            false,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let page = admin.get(r.header("location").expect("back to the settings")).await.text();
    assert!(
        page.contains("data-testid=\"saved\"") && page.contains("value=\"web\"") && page.contains("checked"),
        "{page}"
    );
    let c = w.api.get(&format!("/v1/tenants/{}/clusters/{}", w.tenant, w.cluster)).await.expect("reach");
    assert_eq!(
        c.body["policy"],
        json!({"allowedNamespaces": ["web"], "readOnly": true, "deniedResources": ["configmaps"]})
    );
    let (user, user_token) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    let k = w.kubectl(&user_token, &w.cluster);
    k.ok(&["get", "pods", "-n", "web"]).await;
    let out = k.fails(&["scale", "deployment", "api", "-n", "web", "--replicas=2"]).await;
    assert!(out.contains("read-only"), "{out}");
    let out = k.fails(&["get", "configmaps", "-n", "web"]).await;
    assert!(out.to_lowercase().contains("configmaps"), "{out}");

    // Not a user's: no link, no page, no save.
    assert!(!user.get(&chat_path(&w)).await.text().contains(&settings));
    assert_eq!(user.get(&settings).await.status, 403);
    let theirs = user.csrf(&chat_path(&w)).await;
    let r = user.post(&policy, &[("csrf", &theirs), ("allowed_namespaces", "")], false).await;
    assert_eq!(r.status, 403);

    // Delete: the wrong name deletes nothing; the right one revokes the agent.
    let delete = format!("/ui/clusters/{}/delete", w.cluster);
    let r = admin.post(&delete, &[("csrf", &csrf), ("confirm_name", "prod-typo")], false).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("Type the cluster&#39;s name, prod") || r.text().contains("Type the cluster's name, prod"),
        "{}",
        r.text()
    );
    assert_eq!(admin.get(&chat_path(&w)).await.status, 200, "still there");
    let r = admin.post(&delete, &[("csrf", &csrf), ("confirm_name", "prod")], false).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/")), "{}", r.text());
    assert_eq!(admin.get(&chat_path(&w)).await.status, 404);
    let c = w.api.get(&format!("/v1/tenants/{}/clusters/{}", w.tenant, w.cluster)).await.expect("reach");
    assert_eq!(c.status, 404, "{}", c.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_offers_your_own_recent_lines_again_and_runs_none() {
    let w = world(json!({})).await;
    let (ursula, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    let (other, _) = signed_in(&w, "tenant_user", "otto@acme.example").await;
    ask(&ursula, &w, "kubectl get pods -n web").await;
    ask(&ursula, &w, "kubectl scale deployment api -n web --replicas=2").await;
    ask(&ursula, &w, "show deployments in web").await;
    ask(&other, &w, "kubectl get secrets -n web").await;
    // Written by the writer's next group commit.
    let page = || async { ursula.get(&chat_path(&w)).await.text() };
    kubechat_tests::wait::eventually("ursula's lines in her history", std::time::Duration::from_secs(10), || async {
        page().await.contains("show deployments in web</code>")
    })
    .await;
    let page = page().await;
    let history = page.split("data-testid=\"history\"").nth(1).expect("a history section");
    let newest = history.find("show deployments in web").expect("the English line");
    let older = history.find("kubectl get pods -n web").expect("the kubectl line");
    assert!(newest < older, "newest first: {history}");
    assert!(
        history.contains(&format!("href=\"/ui/clusters/{}?q=kubectl+get+pods+-n+web\"", w.cluster)),
        "each line links back into the box: {history}"
    );
    assert!(!history.contains("get secrets"), "nobody else's lines: {history}");
    // Each line says what became of it.
    let line_of =
        |needle: &str| history.split("<li>").find(|li| li.contains(needle)).map(str::to_string).unwrap_or_default();
    assert!(line_of("kubectl get pods -n web").contains(">ran</span>"), "{history}");
    assert!(line_of("kubectl scale deployment api").contains(">awaiting confirmation</span>"), "{history}");
    // Following the link only fills the box.
    let r = ursula.get(&format!("{}?q=kubectl+get+pods+-n+web", chat_path(&w))).await;
    assert!(r.text().contains("value=\"kubectl get pods -n web\""), "{}", r.text());
    assert!(!r.text().contains("<article class=\"turn"), "a GET runs nothing: {}", r.text());
    // A person who has asked nothing has no history section.
    let (fresh, _) = signed_in(&w, "tenant_user", "fay@acme.example").await;
    assert!(!fresh.get(&chat_path(&w)).await.text().contains("data-testid=\"history\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admins_see_every_tenant_revenue_and_every_tunnel_and_no_one_else_does() {
    let w = world(json!({})).await;
    let mut op = WebClient::new(&w.cp_url, &w.cp_ca);
    assert_eq!(op.sign_in(kubechat_tests::platform::ADMIN).await.status, 303);
    let r = op.get("/ui/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let tenants = page.split("data-testid=\"tenants\"").nth(1).expect("the tenants table");
    assert!(
        tenants.contains(&format!("data-tenant=\"{}\"", w.tenant)) && tenants.contains("<td>acme</td><td>team</td>"),
        "{tenants}"
    );
    // Revenue as the REST API computes it.
    let platform = kubechat_control_plane::client::Client::new_tls(
        &w.cp_url,
        Some(kubechat_control_plane::Secret(kubechat_tests::platform::ADMIN.into())),
        &w.cp_ca,
    );
    let mrr = platform.get("/v1/analytics/mrr").await.expect("reach");
    assert_eq!(mrr.status, 200, "{}", mrr.body);
    let cents = mrr.body["mrrCents"].as_i64().expect("mrrCents");
    let shown =
        page.split("data-testid=\"mrr\"><strong>$").nth(1).and_then(|s| s.split('<').next()).expect("MRR shown");
    assert_eq!(shown, format!("{}.{:02}", cents / 100, cents % 100), "{page}");
    // The tenant's connected cluster is among every tunnel.
    let tunnels = page.split("data-testid=\"tunnels\"").nth(1).expect("the tunnels table");
    assert!(tunnels.contains(&format!("<td>acme</td><td>{}</td>", w.cluster)), "{tunnels}");
    // A tenant's admin sees their own clusters there, never this page.
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let mine = admin.get("/ui/").await.text();
    assert!(mine.contains("Clusters of Acme") && !mine.contains("data-testid=\"tenants\""), "{mine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_grant_and_revoke_access_for_people_of_other_tenants() {
    let w = world(json!({})).await;
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let csrf = admin.csrf("/ui/people").await;
    let grant = |email: &'static str, tenant: &'static str, role: &'static str, days: &'static str| {
        let csrf = csrf.clone();
        let admin = admin.clone();
        async move {
            let fields = [
                ("csrf", csrf.as_str()),
                ("grantee_email", email),
                ("grantee_tenant", tenant),
                ("role", role),
                ("expires_in_days", days),
            ];
            admin.post("/ui/access", &fields, false).await
        }
    };
    // Refused with why: one's own tenant, a made-up role, a bad email.
    let r = grant("ann@acme.example", "acme", "tenant_viewer", "").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("add them as users"), "{}", r.text());
    assert_eq!(grant("pat@partner.example", "partner", "platform_admin", "").await.status, 400);
    assert_eq!(grant("not-an-email", "partner", "tenant_viewer", "").await.status, 400);
    // Granted for 7 days: listed on the page and by the REST API alike.
    let r = grant("Pat@Partner.example", "partner", "tenant_user", "7").await;
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/people")), "{}", r.text());
    let page = admin.get("/ui/people").await.text();
    let table = page.split("data-testid=\"access\"").nth(1).expect("the access table");
    assert!(table.contains("<td>pat@partner.example</td><td>partner</td>"), "{table}");
    let listed = w.api.get(&format!("/v1/tenants/{}/cross-tenant-access", w.tenant)).await.expect("reach");
    let items = listed.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!((items[0]["role"].as_str(), items[0]["expiresAt"].is_i64()), (Some("tenant_user"), true));
    let id = items[0]["id"].as_str().expect("id").to_string();
    // Not a tenant user's to see or make.
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    assert!(!user.get("/ui/people").await.text().contains("People of other tenants"));
    let theirs = user.csrf("/ui/people").await;
    let fields = [
        ("csrf", theirs.as_str()),
        ("grantee_email", "eve@evil.example"),
        ("grantee_tenant", "evil"),
        ("role", "tenant_admin"),
    ];
    assert_eq!(user.post("/ui/access", &fields, false).await.status, 403);
    assert_eq!(user.post(&format!("/ui/access/{id}/revoke"), &[("csrf", &theirs)], false).await.status, 403);
    // Revoked by the admin: gone.
    let r = admin.post(&format!("/ui/access/{id}/revoke"), &[("csrf", &csrf)], false).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let listed = w.api.get(&format!("/v1/tenants/{}/cross-tenant-access", w.tenant)).await.expect("reach");
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0), "{}", listed.body);
    assert_eq!(admin.post(&format!("/ui/access/{id}/revoke"), &[("csrf", &csrf)], false).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_sign_up_creates_a_free_tenant_and_signs_its_admin_in_only_when_open() {
    // Closed unless the operator opens it.
    let closed = world(json!({})).await;
    let b = WebClient::new(&closed.cp_url, &closed.cp_ca);
    assert_eq!(b.get("/ui/signup").await.status, 404);
    let fields = [("name", "Beta"), ("slug", "beta"), ("email", "bo@beta.example"), ("person", "")];
    assert_eq!(b.post("/ui/signup", &fields, false).await.status, 404);
    assert!(!b.get("/ui/login").await.text().contains("/ui/signup"));

    let w = kubechat_tests::platform::world_full(json!({}), |_| {}, |c| c.self_service_signup = true).await;
    let mut b = WebClient::new(&w.cp_url, &w.cp_ca);
    assert!(b.get("/ui/login").await.text().contains("href=\"/ui/signup\""));
    assert_eq!(b.get("/ui/signup").await.status, 200);
    // Refused with why, what was typed kept.
    let r = b.post("/ui/signup", &[("name", "Beta"), ("slug", "Beta Corp"), ("email", "bo@beta.example")], false).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("slug must be lowercase") && r.text().contains("value=\"bo@beta.example\""),
        "{}",
        r.text()
    );
    // A NUL character (which PostgreSQL cannot store) is refused as such.
    let r = b.post("/ui/signup", &[("name", "Beta\0"), ("slug", "beta"), ("email", "bo@beta.example")], false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("NUL character"), "{}", r.text());
    let r =
        b.post("/ui/signup", &[("name", "Acme again"), ("slug", "acme"), ("email", "x@acme2.example")], false).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("already exists"), "{}", r.text());
    // Another site's form makes nothing.
    let r = b
        .post_with(
            "/ui/signup",
            &[("name", "Evil"), ("slug", "evil"), ("email", "e@evil.example")],
            &[("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);

    // Made: signed in at once, the token shown once, the tenant free and on trial.
    let r = b
        .post(
            "/ui/signup",
            &[("name", "Beta"), ("slug", "beta"), ("email", "Bo@Beta.example"), ("person", "Bo")],
            false,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").expect("a session cookie").to_string();
    assert!(
        set.starts_with("__Host-kubechat=") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let page = r.text();
    let token = page
        .split("data-testid=\"new-token\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the token")
        .to_string();
    assert!(token.starts_with("kc_"), "{token}");
    b.cookie = set.split(';').next().map(str::to_string);
    let home = b.get("/ui/").await.text();
    assert!(home.contains("Clusters of Beta") && home.contains("bo@beta.example"), "{home}");
    assert!(!b.get("/ui/").await.text().contains(&token), "the token is shown only once");
    let api = kubechat_control_plane::client::Client::new_tls(
        &w.cp_url,
        Some(kubechat_control_plane::Secret(token)),
        &w.cp_ca,
    );
    let mine = api.get("/v1/tenants").await.expect("reach");
    let t = mine.body["items"].as_array().and_then(|a| a.first()).cloned().expect("its tenant");
    assert_eq!((t["slug"].as_str(), t["status"].as_str()), (Some("beta"), Some("trial")), "{t}");
    assert_eq!(t["subscription"]["plan"], "free", "{t}");
    // Nothing of another tenant: acme's cluster is a 404 to Beta's admin.
    assert_eq!(b.get(&chat_path(&w)).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_says_when_and_why_its_tunnel_last_dropped() {
    // The relay publishes tunnel events from its spool.
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    let w = kubechat_tests::platform::world_with(json!({}), |c| c.spool_dir = Some(dir)).await;
    let (user, _) = signed_in(&w, "tenant_user", "ursula@acme.example").await;
    let page = user.get(&chat_path(&w)).await.text();
    assert!(page.contains("connected") && !page.contains("data-testid=\"last-drop\""), "no drop yet: {page}");
    // The agent goes away: the relay records why, and the page says so.
    w.agent.shutdown.cancel();
    kubechat_tests::wait::eventually("the drop on the cluster page", std::time::Duration::from_secs(20), || async {
        user.get(&chat_path(&w)).await.text().contains("data-testid=\"last-drop\"")
    })
    .await;
    let page = user.get(&chat_path(&w)).await.text();
    let drop = page.split("data-testid=\"last-drop\">").nth(1).and_then(|s| s.split("</p>").next()).expect("the drop");
    assert!(drop.starts_with("Last tunnel drop: ") && drop.contains(" on relay-"), "{drop}");
    assert!(drop.contains("the agent retired it: agent shutting down"), "the relay's reason is shown: {drop}");
    // The audit filter finds it as well.
    let (admin, _) = signed_in(&w, "tenant_admin", "ada@acme.example").await;
    let r = admin.get("/ui/audit?kind=tunnel_disconnect").await;
    assert!(audit_rows(&r.text()).len() == 1 && r.text().contains("selected>tunnel down<"), "{}", r.text());
}
