//! `kubechat chat`: an interactive prompt over the chat command API, for
//! people without the web app. Each line is plain English, or a kubectl
//! command line when it starts with `kubectl` (split into arguments like a
//! shell's words, quotes kept together, nothing expanded). The plan is
//! shown — its command line, its requests and verdicts, the dry run — and a
//! write runs only when the person confirms it (typing the object's name
//! for destructive ones). `kubectl apply -f FILE` reads FILE here and sends
//! it as the pasted manifest. Streams print until the next line is typed.

use std::io::Write;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::client::Client;

/// Splits a command line into words: whitespace separates, single and
/// double quotes group, a backslash escapes the next character; nothing
/// else is interpreted.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Renders output blocks as text, tables aligned.
pub fn render(blocks: &[Value]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("table") => {
                let cols: Vec<String> =
                    b["columns"].as_array().into_iter().flatten().map(|c| cell(&c["name"])).collect();
                let rows: Vec<Vec<String>> = b["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r.as_array().into_iter().flatten().map(cell).collect())
                    .collect();
                if rows.is_empty() {
                    out.push_str(&format!("No resources found ({}).\n", cell(&b["title"])));
                    continue;
                }
                let widths: Vec<usize> = (0..cols.len())
                    .map(|i| {
                        rows.iter().map(|r| r.get(i).map_or(0, String::len)).chain([cols[i].len()]).max().unwrap_or(0)
                    })
                    .collect();
                let line = |vals: &[String]| {
                    vals.iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect::<Vec<_>>()
                        .join("   ")
                        .trim_end()
                        .to_string()
                };
                out.push_str(&line(&cols));
                out.push('\n');
                for r in &rows {
                    out.push_str(&line(r));
                    out.push('\n');
                }
                if let Some(c) = b["continue"].as_str() {
                    out.push_str(&format!("(more: continue token {c})\n"));
                }
            }
            Some("text") | Some("yaml") => {
                out.push_str(b["text"].as_str().unwrap_or(""));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Some("json") => {
                out.push_str(&serde_json::to_string_pretty(&b["value"]).unwrap_or_default());
                out.push('\n');
            }
            Some("findings") => {
                out.push_str(&format!("{}:\n", cell(&b["title"])));
                for f in b["items"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  [{}] {}: {}\n",
                        cell(&f["severity"]),
                        cell(&f["object"]),
                        cell(&f["message"])
                    ));
                    for e in f["evidence"].as_array().into_iter().flatten() {
                        out.push_str(&format!("      | {}\n", cell(e)));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Renders a plan's header: its command line, risk and each request.
pub fn render_plan(p: &Value) -> String {
    let mut out = String::new();
    if let Some(k) = p["kubectl"].as_str() {
        match p["risk"].as_str() {
            Some(risk) => out.push_str(&format!("$ {k}   ({risk})\n")),
            None => out.push_str(&format!("$ {k}\n")),
        }
    }
    for n in p["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("note: {}\n", cell(n)));
    }
    for d in p["dryRun"].as_array().into_iter().flatten() {
        out.push_str(&format!("dry run: {}\n", cell(&d["summary"])));
        for c in d["changes"].as_array().into_iter().flatten() {
            out.push_str(&format!("    {}\n", cell(c)));
        }
    }
    out
}

/// One prompt session against `cluster` until `input` ends or `exit`.
pub async fn session<R, W>(client: &Client, cluster: &str, namespace: &str, input: R, mut out: W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let mut lines = input.lines();
    let path = format!("/v1/clusters/{cluster}/commands");
    writeln!(
        out,
        "KubeChat on cluster {cluster} (namespace {namespace}). Plain English, or a kubectl command line. `exit` ends."
    )?;
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let Some(line) = lines.next_line().await? else { return Ok(()) };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            return Ok(());
        }
        let body = match request_body(&line, namespace) {
            Ok(b) => b,
            Err(e) => {
                writeln!(out, "error: {e}")?;
                continue;
            }
        };
        let mut body = body;
        // Up to one question back, answered by its number.
        for _ in 0..2 {
            let r = match client.post(&path, &body).await {
                Ok(r) => r,
                Err(e) => {
                    writeln!(out, "error: {e}")?;
                    break;
                }
            };
            if let Some(q) = r.body.get("question").filter(|q| q.is_object()) {
                writeln!(out, "? {}", cell(&q["text"]))?;
                let choices = q["choices"].as_array().cloned().unwrap_or_default();
                for (i, c) in choices.iter().enumerate() {
                    writeln!(out, "  {}) {}", i + 1, cell(&c["label"]))?;
                }
                write!(out, "choose (number, or empty to skip): ")?;
                out.flush()?;
                let pick = lines.next_line().await?.unwrap_or_default();
                match pick.trim().parse::<usize>().ok().and_then(|n| choices.get(n.wrapping_sub(1))) {
                    Some(c) => body = json!({"argv": c["argv"], "namespace": namespace}),
                    None => break,
                }
                continue;
            }
            if r.status != 200 {
                let plan = r.body.get("plan").cloned().unwrap_or_default();
                if !plan.is_null() {
                    write!(out, "{}", render_plan(&plan))?;
                }
                writeln!(
                    out,
                    "error: {} ({})",
                    r.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("refused"),
                    r.body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error")
                )?;
                break;
            }
            let plan = r.body;
            write!(out, "{}", render_plan(&plan))?;
            if let Some(result) = plan["result"].as_array() {
                write!(out, "{}", render(result))?;
            }
            if let Some(stream) = plan["stream"].as_str() {
                follow(client, stream, &mut lines, &mut out).await?;
            }
            if plan["needsConfirmation"] == true {
                confirm(client, cluster, &plan, &mut lines, &mut out).await?;
            }
            break;
        }
    }
}

/// The request for one typed line.
fn request_body(line: &str, namespace: &str) -> Result<Value, String> {
    let Some(rest) = line.strip_prefix("kubectl ") else {
        return Ok(json!({"text": line, "namespace": namespace}));
    };
    let argv = words(rest)?;
    // `apply -f FILE`: the file is read here, on the person's machine.
    if argv.first().map(String::as_str) == Some("apply")
        && let Some(i) = argv.iter().position(|a| a == "-f" || a == "--filename")
        && let Some(file) = argv.get(i + 1).filter(|f| *f != "-" && !f.contains("://"))
    {
        let manifest = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let mut argv = argv.clone();
        argv[i + 1] = "-".into();
        return Ok(json!({"argv": argv, "manifest": manifest, "namespace": namespace}));
    }
    Ok(json!({"argv": argv, "namespace": namespace}))
}

async fn confirm<R, W>(
    client: &Client,
    cluster: &str,
    plan: &Value,
    lines: &mut tokio::io::Lines<R>,
    out: &mut W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let typed = match plan["typeToConfirm"].as_str() {
        Some(name) => {
            write!(out, "This is destructive. Type {name} to run it (anything else cancels): ")?;
            out.flush()?;
            let t = lines.next_line().await?.unwrap_or_default();
            if t.trim() != name {
                writeln!(out, "cancelled; nothing was run")?;
                return Ok(());
            }
            Some(name.to_string())
        }
        None => {
            write!(out, "Run it? [y/N] ")?;
            out.flush()?;
            let t = lines.next_line().await?.unwrap_or_default();
            if !matches!(t.trim(), "y" | "Y" | "yes") {
                writeln!(out, "cancelled; nothing was run")?;
                return Ok(());
            }
            None
        }
    };
    if plan["needsApproval"] == true {
        writeln!(out, "waiting for a second tenant admin's approval (plan {})", cell(&plan["id"]))?;
    }
    let mut body = json!({"confirmation": plan["confirmation"]});
    if let Some(t) = typed {
        body["typedName"] = json!(t);
    }
    let path = format!("/v1/clusters/{cluster}/commands/{}/confirm", cell(&plan["id"]));
    match client.post(&path, &body).await {
        Ok(r) if r.status == 200 => {
            for d in r.body["done"].as_array().into_iter().flatten() {
                writeln!(out, "done: {}", cell(d))?;
            }
            if let Some(result) = r.body["result"].as_array() {
                write!(out, "{}", render(result))?;
            }
            if let Some(e) = r.body["error"].as_str() {
                writeln!(out, "error: {e}")?;
            }
        }
        Ok(r) => {
            writeln!(out, "error: {}", r.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("refused"))?
        }
        Err(e) => writeln!(out, "error: {e}")?,
    }
    Ok(())
}

async fn follow<R, W>(client: &Client, url: &str, lines: &mut tokio::io::Lines<R>, out: &mut W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let mut events = match client.events(url).await {
        Ok(e) => e,
        Err(e) => return writeln!(out, "error: {e}"),
    };
    writeln!(out, "(streaming; press Enter to stop)")?;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some((kind, data)) if kind == "line" => writeln!(out, "{data}")?,
                Some((kind, data)) if kind == "end" => {
                    writeln!(out, "(stream ended: {})", serde_json::from_str::<Value>(&data).ok().and_then(|v| v["reason"].as_str().map(str::to_string)).unwrap_or_default())?;
                    return Ok(());
                }
                Some((kind, data)) => {
                    let v: Value = serde_json::from_str(&data).unwrap_or_default();
                    writeln!(out, "{kind}: {}/{}", cell(&v["namespace"]), cell(&v["name"]))?;
                }
                None => return Ok(()),
            },
            _ = lines.next_line() => {
                let _ = client.delete(url).await;
                writeln!(out, "(stopped)")?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell_without_expanding_anything() {
        assert_eq!(words("get pods -n web").expect("valid"), ["get", "pods", "-n", "web"]);
        assert_eq!(
            words(r#"label pod a 'x=a b' "y=\"q\"" $HOME"#).expect("valid"),
            ["label", "pod", "a", "x=a b", "y=\"q\"", "$HOME"]
        );
        assert_eq!(
            words("exec a -- sh -c 'ls; rm -rf /'").expect("valid"),
            ["exec", "a", "--", "sh", "-c", "ls; rm -rf /"]
        );
        assert!(words("get 'pods").is_err());
        assert_eq!(words("''").expect("valid"), [""]);
    }

    #[test]
    fn tables_render_aligned() {
        let b = json!([{"type": "table", "title": "pods", "columns": [{"name": "NAME"}, {"name": "READY"}], "rows": [["api-1", "1/1"], ["frontend-abc", "2/2"]]}]);
        assert_eq!(
            render(b.as_array().expect("valid")),
            "NAME           READY\napi-1          1/1\nfrontend-abc   2/2\n"
        );
    }
}
