//! Azure Resource Graph (`POST /providers/Microsoft.ResourceGraph/resources`), evaluating a
//! documented subset of KQL over the tenant's vaults, workspaces and verbatim resources:
//!
//! * table `resources`, then any of `where`, `project`, `extend`, `order by`/`sort by`,
//!   `limit`/`take`;
//! * predicates joined by `and`/`or`/`not(...)`, parentheses;
//! * operators `==`, `!=`, `=~`, `!~`, `contains`, `!contains`, `has`, `startswith`,
//!   `endswith`, `in`, `in~`, `!in`, `!in~`, `<`, `<=`, `>`, `>=`;
//! * functions `tostring`, `tolower`, `toupper`, `isnotempty`, `isempty`, `isnull`, `isnotnull`;
//! * dotted property paths (`properties.encryption.keyVaultProperties.keyVaultArmId`) and
//!   `['name']` indexing, case-sensitive as in KQL (a path in the wrong case is null).
//!
//! Rows look like Resource Graph rows (`type` and `resourceGroup` lower-cased). Paging follows the
//! service: `options.$top` (default 100, max 1000), `$skip`, `$skipToken` replayed with the same
//! query and scopes (azure-notes Trap T11), and `resultTruncated` as the strings `"true"`/`"false"`
//! (`"true"` when rows lack `id` and do not fit one page). Anything else is a 400.

use crate::arm::vault_json;
use crate::http::{Ctx, Reply};
use crate::ids::{self, eq_ci};
use crate::model::Tenant;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

fn graph_error(code: &str, message: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": {
            "code": "BadRequest",
            "message": format!("Please provide below info when asking for support: timestamp = {}, correlationId = {}.", crate::clock::rfc3339_now(), ids::random_uuid()),
            "details": [
                {"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."},
                {"code": code, "message": message},
            ]
        }}),
    )
}

/// The rows Resource Graph would index for the tenant.
pub fn rows(tenant: &Tenant) -> Vec<Value> {
    let mut rows = Vec::new();
    let row = |id: String, body: &Value, sub: &str, rg: &str| {
        let text = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
        json!({
            "id": id,
            "name": text("name"),
            "type": body.get("type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase(),
            "tenantId": tenant.tenant_id,
            "kind": body.get("kind").cloned().unwrap_or(json!("")),
            "location": text("location"),
            "resourceGroup": rg.to_ascii_lowercase(),
            "subscriptionId": sub,
            "managedBy": "",
            "sku": text("sku"),
            "plan": null,
            "properties": text("properties"),
            "tags": body.get("tags").cloned().unwrap_or(json!({})),
            "identity": text("identity"),
            "zones": null,
            "extendedLocation": null,
        })
    };
    for v in &tenant.vaults {
        rows.push(row(
            v.id(),
            &vault_json(v),
            &v.subscription,
            &v.resource_group,
        ));
    }
    for w in &tenant.workspaces {
        let body = crate::arm::workspace_json(w, &tenant.tenant_id);
        rows.push(row(w.id(), &body, &w.subscription, &w.resource_group));
        // Its endpoints: `microsoft.machinelearningservices/workspaces/onlineendpoints` and
        // `…/batchendpoints` rows, as Resource Graph lists them.
        for (kind, endpoints) in [
            ("onlineEndpoints", &w.online_endpoints),
            ("batchEndpoints", &w.batch_endpoints),
        ] {
            for e in endpoints {
                let body = crate::arm::endpoint_json(w, e, kind, &tenant.tenant_id);
                let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
                rows.push(row(
                    id.to_owned(),
                    &body,
                    &w.subscription,
                    &w.resource_group,
                ));
            }
        }
    }
    for r in &tenant.resources {
        if let Some(p) = ids::ArmIdParts::parse(&r.id) {
            rows.push(row(
                r.id.clone(),
                &r.body,
                &p.subscription,
                &p.resource_group,
            ));
        }
    }
    rows
}

/// `Resources` (operationId): run a query.
pub(crate) fn resources(ctx: &mut Ctx) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return graph_error("InvalidRequestContent", &e),
    };
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return graph_error("InvalidRequestContent", "The 'query' property is required.");
    };
    let subscriptions: Option<Vec<String>> = body
        .get("subscriptions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    let options = body.get("options").cloned().unwrap_or(Value::Null);
    let top = options.get("$top").and_then(Value::as_u64).unwrap_or(100);
    if !(1..=1000).contains(&top) {
        return graph_error("InvalidTop", "$top must be between 1 and 1000.");
    }
    let skip = options.get("$skip").and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut scope_key = format!("{query}\n");
    if let Some(subs) = &subscriptions {
        let mut sorted: Vec<String> = subs.iter().map(|s| s.to_ascii_lowercase()).collect();
        sorted.sort();
        scope_key.push_str(&sorted.join(","));
    }
    let scope_hash = ids::stable_hex32(&scope_key);
    let offset = match options.get("$skipToken").and_then(Value::as_str) {
        None => skip,
        Some(token) => match decode_token(token) {
            Some((o, h)) if h == scope_hash => o,
            _ => {
                return graph_error(
                    "InvalidSkipToken",
                    "The skip token is invalid or was issued for a different query or scope.",
                );
            }
        },
    };
    let pipeline = match parse(query) {
        Ok(p) => p,
        Err(e) => return graph_error("ParserFailure", &e),
    };
    let all = {
        let frozen = crate::http::lock(&ctx.shared.graph_view).clone();
        let live = ctx.tenant();
        let tenant: &Tenant = frozen.as_ref().unwrap_or(&live);
        let caller = ctx
            .caller
            .as_ref()
            .map(|c| c.object_id.clone())
            .unwrap_or_default();
        let mut all = rows(tenant);
        if tenant.enforce_management_rbac {
            all.retain(|r| {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                tenant.can(&caller, &format!("{}/read", text("type")), text("id"))
            });
        }
        all
    };
    let scoped: Vec<Value> = all
        .into_iter()
        .filter(|r| {
            subscriptions.as_ref().is_none_or(|subs| {
                let sub = r
                    .get("subscriptionId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                subs.iter().any(|s| eq_ci(s, sub))
            })
        })
        .collect();
    let result = match run(&pipeline, scoped) {
        Ok(r) => r,
        Err(e) => return graph_error("UnsupportedOperator", &e),
    };
    let total = result.len();
    let end = (offset + top as usize).min(total);
    let page: Vec<Value> = result
        .get(offset.min(total)..end)
        .unwrap_or_default()
        .to_vec();
    let has_ids = page.iter().all(|r| r.get("id").is_some());
    let more = end < total;
    let mut response = Map::new();
    response.insert("totalRecords".into(), json!(total));
    response.insert("count".into(), json!(page.len()));
    response.insert(
        "resultTruncated".into(),
        json!(if more && !has_ids { "true" } else { "false" }),
    );
    if more && has_ids {
        response.insert("$skipToken".into(), json!(encode_token(end, &scope_hash)));
    }
    response.insert("facets".into(), json!([]));
    let table = options
        .get("resultFormat")
        .and_then(Value::as_str)
        .is_some_and(|f| f.eq_ignore_ascii_case("table"));
    response.insert(
        "data".into(),
        if table {
            to_table(&page)
        } else {
            Value::Array(page)
        },
    );
    Reply::ok(Value::Object(response))
        .with_header("x-ms-user-quota-remaining", "14")
        .with_header("x-ms-user-quota-resets-after", "00:00:05")
}

fn encode_token(offset: usize, hash: &str) -> String {
    STANDARD.encode(json!({"o": offset, "h": hash}).to_string())
}

fn decode_token(token: &str) -> Option<(usize, String)> {
    let v: Value = serde_json::from_slice(&STANDARD.decode(token).ok()?).ok()?;
    Some((
        v.get("o")?.as_u64()? as usize,
        v.get("h")?.as_str()?.to_owned(),
    ))
}

fn to_table(rows: &[Value]) -> Value {
    let columns: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let kind = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Number(_) => "integer",
        Value::Bool(_) => "boolean",
        _ => "object",
    };
    let first = rows.first().cloned().unwrap_or(Value::Null);
    json!({
        "columns": columns.iter().map(|c| json!({"name": c, "type": kind(first.get(c).unwrap_or(&Value::Null))})).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| columns.iter().map(|c| r.get(c).cloned().unwrap_or(Value::Null)).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

// ---- tokenizer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(String),
}

fn tokenize(q: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string literal".into());
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Num(
                text.parse().map_err(|_| format!("bad number '{text}'"))?,
            ));
        } else if c.is_alphabetic()
            || c == '_'
            || c == '$'
            || (c == '!' && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '$'))
            {
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            if chars.get(i) == Some(&'~')
                && matches!(word.to_ascii_lowercase().as_str(), "in" | "!in")
            {
                word.push('~');
                i += 1;
            }
            out.push(Tok::Ident(word));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["==", "!=", "=~", "!~", "<=", ">="].contains(&two.as_str()) {
                out.push(Tok::Sym(two));
                i += 2;
            } else if "|(),[]=<>".contains(c) {
                out.push(Tok::Sym(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected character '{c}'"));
            }
        }
    }
    Ok(out)
}

// ---- parser ----

#[derive(Debug, Clone)]
enum Expr {
    Path(Vec<String>),
    Lit(Value),
    Call(String, Vec<Expr>),
    Cmp(Box<Expr>, String, Box<Expr>),
    In(Box<Expr>, String, Vec<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone)]
enum Stage {
    Where(Expr),
    Project(Vec<(String, Expr)>),
    Extend(Vec<(String, Expr)>),
    Order(Vec<(Expr, bool)>),
    Limit(usize),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

const CMP_OPS: &[&str] = &[
    "==",
    "!=",
    "=~",
    "!~",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "!contains",
    "contains_cs",
    "has",
    "!has",
    "startswith",
    "!startswith",
    "endswith",
    "!endswith",
];
const IN_OPS: &[&str] = &["in", "in~", "!in", "!in~"];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w))
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if x == s)
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.is_sym(s) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{s}', found {:?}", self.peek()))
        }
    }
    fn at_stage_end(&self) -> bool {
        self.peek().is_none() || self.is_sym("|")
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and_expr()?;
        while self.is_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }
    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.comparison()?;
        while self.is_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }
    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Sym(s)) if CMP_OPS.contains(&s.as_str()) => s.clone(),
            Some(Tok::Ident(w))
                if CMP_OPS
                    .iter()
                    .chain(IN_OPS)
                    .any(|o| o.eq_ignore_ascii_case(w)) =>
            {
                w.to_ascii_lowercase()
            }
            _ => return Ok(left),
        };
        self.pos += 1;
        if IN_OPS.contains(&op.as_str()) {
            self.expect_sym("(")?;
            let mut items = vec![self.primary()?];
            while self.is_sym(",") {
                self.pos += 1;
                items.push(self.primary()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::In(Box::new(left), op, items));
        }
        Ok(Expr::Cmp(Box::new(left), op, Box::new(self.primary()?)))
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Expr::Lit(json!(s))),
            Some(Tok::Num(n)) => Ok(Expr::Lit(json!(n))),
            Some(Tok::Sym(s)) if s == "(" => {
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Some(Tok::Ident(w))
                if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") =>
            {
                Ok(Expr::Lit(json!(w.eq_ignore_ascii_case("true"))))
            }
            Some(Tok::Ident(w)) if self.is_sym("(") => {
                self.pos += 1;
                let mut args = Vec::new();
                if !self.is_sym(")") {
                    args.push(self.expr()?);
                    while self.is_sym(",") {
                        self.pos += 1;
                        args.push(self.expr()?);
                    }
                }
                self.expect_sym(")")?;
                if w.eq_ignore_ascii_case("not") {
                    let arg = args.into_iter().next().ok_or("not() needs an argument")?;
                    return Ok(Expr::Not(Box::new(arg)));
                }
                Ok(Expr::Call(w.to_ascii_lowercase(), args))
            }
            Some(Tok::Ident(w)) => {
                let mut path: Vec<String> = w.split('.').map(str::to_owned).collect();
                while self.is_sym("[") {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Str(s)) => path.push(s),
                        Some(Tok::Num(n)) => path.push((n as usize).to_string()),
                        other => return Err(format!("bad index {other:?}")),
                    }
                    self.expect_sym("]")?;
                }
                Ok(Expr::Path(path))
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }
    fn assignments(&mut self) -> Result<Vec<(String, Expr)>, String> {
        let mut items = Vec::new();
        loop {
            let start = self.pos;
            let named = match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                (Some(Tok::Ident(n)), Some(Tok::Sym(eq))) if eq == "=" => Some(n.clone()),
                _ => None,
            };
            let item = match named {
                Some(name) => {
                    self.pos += 2;
                    (name, self.expr()?)
                }
                None => {
                    let e = self.expr()?;
                    let name = match &e {
                        Expr::Path(p) => p.last().cloned().unwrap_or_default(),
                        _ => format!("Column{}", start),
                    };
                    (name, e)
                }
            };
            items.push(item);
            if self.is_sym(",") {
                self.pos += 1;
            } else {
                return Ok(items);
            }
        }
    }
}

fn parse(query: &str) -> Result<Vec<Stage>, String> {
    let mut p = Parser {
        toks: tokenize(query)?,
        pos: 0,
    };
    match p.next() {
        Some(Tok::Ident(t)) if t.eq_ignore_ascii_case("resources") => {}
        other => {
            return Err(format!(
                "only the 'resources' table is supported, found {other:?}"
            ));
        }
    }
    let mut stages = Vec::new();
    while p.peek().is_some() {
        p.expect_sym("|")?;
        let Some(Tok::Ident(op)) = p.next() else {
            return Err("expected an operator after '|'".into());
        };
        let stage = match op.to_ascii_lowercase().as_str() {
            "where" => Stage::Where(p.expr()?),
            "project" => Stage::Project(p.assignments()?),
            "extend" => Stage::Extend(p.assignments()?),
            "order" | "sort" => {
                if !p.is_word("by") {
                    return Err(format!("expected 'by' after '{op}'"));
                }
                p.pos += 1;
                let mut keys = Vec::new();
                loop {
                    let e = p.expr()?;
                    let mut descending = true;
                    if p.is_word("asc") {
                        descending = false;
                        p.pos += 1;
                    } else if p.is_word("desc") {
                        p.pos += 1;
                    }
                    keys.push((e, descending));
                    if p.is_sym(",") {
                        p.pos += 1;
                    } else {
                        break;
                    }
                }
                Stage::Order(keys)
            }
            "limit" | "take" => match p.next() {
                Some(Tok::Num(n)) => Stage::Limit(n as usize),
                other => return Err(format!("expected a number after '{op}', found {other:?}")),
            },
            other => return Err(format!("operator '{other}' is not supported by azure-sim")),
        };
        if !p.at_stage_end() {
            return Err(format!("unexpected {:?} after '{op}'", p.peek()));
        }
        stages.push(stage);
    }
    Ok(stages)
}

// ---- evaluation ----

/// A column or dotted property path. Names are case-sensitive, as in KQL: Resource Graph
/// answers `properties.encryption.keyVaultProperties` of a storage account (which ARM spells
/// `keyvaultproperties`) with null.
fn lookup(row: &Value, path: &[String]) -> Value {
    let mut current = row;
    for part in path {
        let next = match current {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Value::Null,
        }
    }
    current.clone()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn eval(e: &Expr, row: &Value) -> Result<Value, String> {
    Ok(match e {
        Expr::Path(p) => lookup(row, p),
        Expr::Lit(v) => v.clone(),
        Expr::Not(inner) => json!(!truthy(&eval(inner, row)?)),
        Expr::And(a, b) => json!(truthy(&eval(a, row)?) && truthy(&eval(b, row)?)),
        Expr::Or(a, b) => json!(truthy(&eval(a, row)?) || truthy(&eval(b, row)?)),
        Expr::Call(f, args) => {
            let arg = match args.first() {
                Some(a) => eval(a, row)?,
                None => return Err(format!("{f}() needs an argument")),
            };
            match f.as_str() {
                "tostring" => json!(text(&arg)),
                "tolower" => json!(text(&arg).to_lowercase()),
                "toupper" => json!(text(&arg).to_uppercase()),
                "isnotempty" => json!(!text(&arg).is_empty()),
                "isempty" => json!(text(&arg).is_empty()),
                "isnull" => json!(arg.is_null()),
                "isnotnull" => json!(!arg.is_null()),
                "tobool" => json!(truthy(&arg) || text(&arg).eq_ignore_ascii_case("true")),
                other => return Err(format!("function '{other}' is not supported by azure-sim")),
            }
        }
        Expr::In(left, op, items) => {
            let l = eval(left, row)?;
            let ci = op.ends_with('~');
            let mut found = false;
            for item in items {
                let r = eval(item, row)?;
                found |= if ci {
                    text(&l).eq_ignore_ascii_case(&text(&r))
                } else {
                    l == r || text(&l) == text(&r)
                };
            }
            json!(if op.starts_with('!') { !found } else { found })
        }
        Expr::Cmp(left, op, right) => {
            let (l, r) = (eval(left, row)?, eval(right, row)?);
            let (ls, rs) = (text(&l).to_lowercase(), text(&r).to_lowercase());
            let num = |v: &Value| v.as_f64().or_else(|| text(v).parse().ok());
            json!(match op.as_str() {
                "==" => l == r || (l.is_string() || r.is_string()) && text(&l) == text(&r),
                "!=" => !(l == r || (l.is_string() || r.is_string()) && text(&l) == text(&r)),
                "=~" => ls == rs,
                "!~" => ls != rs,
                "contains" => ls.contains(&rs),
                "!contains" => !ls.contains(&rs),
                "contains_cs" => text(&l).contains(&text(&r)),
                "has" => has_term(&ls, &rs),
                "!has" => !has_term(&ls, &rs),
                "startswith" => ls.starts_with(&rs),
                "!startswith" => !ls.starts_with(&rs),
                "endswith" => ls.ends_with(&rs),
                "!endswith" => !ls.ends_with(&rs),
                "<" | "<=" | ">" | ">=" => match (num(&l), num(&r)) {
                    (Some(a), Some(b)) => match op.as_str() {
                        "<" => a < b,
                        "<=" => a <= b,
                        ">" => a > b,
                        _ => a >= b,
                    },
                    _ => false,
                },
                other => return Err(format!("operator '{other}' is not supported")),
            })
        }
    })
}

/// `has`: the term appears delimited by non-alphanumeric characters.
fn has_term(haystack: &str, term: &str) -> bool {
    if term.is_empty() {
        return true;
    }
    haystack.match_indices(term).any(|(i, _)| {
        let before = haystack[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let after = haystack[i + term.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        before && after
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => text(a).cmp(&text(b)),
    }
}

fn run(stages: &[Stage], mut rows: Vec<Value>) -> Result<Vec<Value>, String> {
    for stage in stages {
        rows = match stage {
            Stage::Where(e) => {
                let mut kept = Vec::new();
                for r in rows {
                    if truthy(&eval(e, &r)?) {
                        kept.push(r);
                    }
                }
                kept
            }
            Stage::Project(items) | Stage::Extend(items) => {
                let extend = matches!(stage, Stage::Extend(_));
                let mut out = Vec::new();
                for r in rows {
                    let mut obj = if extend {
                        r.as_object().cloned().unwrap_or_default()
                    } else {
                        Map::new()
                    };
                    for (name, e) in items {
                        obj.insert(name.clone(), eval(e, &r)?);
                    }
                    out.push(Value::Object(obj));
                }
                out
            }
            Stage::Order(keys) => {
                let mut keyed = Vec::new();
                for r in rows {
                    let k: Result<Vec<Value>, String> =
                        keys.iter().map(|(e, _)| eval(e, &r)).collect();
                    keyed.push((k?, r));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, (_, descending)) in keys.iter().enumerate() {
                        let ord = compare(&a[i], &b[i]);
                        let ord = if *descending { ord.reverse() } else { ord };
                        if ord.is_ne() {
                            return ord;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                keyed.into_iter().map(|(_, r)| r).collect()
            }
            Stage::Limit(n) => rows.into_iter().take(*n).collect(),
        };
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Value> {
        vec![
            json!({"id": "/s/1", "name": "ws1", "type": "microsoft.machinelearningservices/workspaces", "subscriptionId": "A",
                   "properties": {"encryption": {"keyVaultProperties": {"keyVaultArmId": "/subscriptions/A/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1"}}}}),
            json!({"id": "/s/2", "name": "kv1", "type": "microsoft.keyvault/vaults", "subscriptionId": "A", "properties": {"enablePurgeProtection": true}}),
            json!({"id": "/s/3", "name": "ws2", "type": "microsoft.machinelearningservices/workspaces", "subscriptionId": "B", "properties": {}}),
        ]
    }

    fn q(query: &str) -> Vec<Value> {
        run(&parse(query).unwrap(), sample()).unwrap()
    }

    #[test]
    fn workspace_by_vault_query() {
        let r = q(
            "Resources | where type =~ 'Microsoft.MachineLearningServices/workspaces' \
                   | where tolower(tostring(properties.encryption.keyVaultProperties.keyVaultArmId)) == tolower('/subscriptions/a/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv1') \
                   | project id, name, kv = properties.encryption.keyVaultProperties.keyVaultArmId",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["name"], "ws1");
        assert!(r[0]["kv"].as_str().unwrap().ends_with("KV1"));
    }

    #[test]
    fn in_lists_order_and_limit() {
        let r = q(
            "resources | where type in~ ('microsoft.keyvault/vaults','MICROSOFT.MACHINELEARNINGSERVICES/WORKSPACES') and subscriptionId !in ('B') | order by name desc | take 5",
        );
        let names: Vec<&str> = r.iter().map(|x| x["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["ws1", "kv1"]);
        let r = q(
            "resources | where isnotempty(properties.enablePurgeProtection) or name has 'ws2' | order by id asc",
        );
        assert_eq!(r.len(), 2);
        let r = q("resources | where not(name startswith 'ws') | project name");
        assert_eq!(r, vec![json!({"name": "kv1"})]);
    }

    /// The query shapes cmk-guard's resolver sends (handler/src/resolve.rs).
    #[test]
    fn cmk_guard_resolver_queries() {
        let base = "resources | where type =~ 'microsoft.machinelearningservices/workspaces' \
            | extend vault = tolower(tostring(properties.encryption.keyVaultProperties.keyVaultArmId))";
        let run_where = |condition: &str| {
            q(&format!(
                "{base} | where {condition} | project id | order by id asc"
            ))
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
        };
        assert_eq!(
            run_where(
                "vault == '/subscriptions/a/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv1'"
            ),
            vec!["/s/1"]
        );
        assert_eq!(
            run_where("vault startswith '/subscriptions/a/' or tolower(id) startswith '/s/3'"),
            vec!["/s/1", "/s/3"]
        );
        assert_eq!(
            run_where(
                "vault startswith '/subscriptions/a/' and vault endswith '/providers/microsoft.keyvault/vaults/kv1'"
            ),
            vec!["/s/1"]
        );
        assert_eq!(
            run_where(
                "subscriptionId == 'B' and tostring(properties.encryption.status) =~ 'Enabled'"
            ),
            Vec::<String>::new()
        );
        assert_eq!(run_where("false"), Vec::<String>::new());
        assert_eq!(run_where("name == 'it\\'s'"), Vec::<String>::new());
    }

    #[test]
    fn property_names_are_case_sensitive() {
        let rows = vec![
            json!({"id": "/s/sa", "type": "microsoft.storage/storageaccounts",
            "properties": {"encryption": {"keySource": "Microsoft.Keyvault",
                "keyvaultproperties": {"keyvaulturi": "https://KV1.vault.azure.net/", "keyname": "cmk"}}}}),
        ];
        let run_one = |query: &str| run(&parse(query).unwrap(), rows.clone()).unwrap();
        let right = run_one(
            "resources | extend v = tostring(properties.encryption.keyvaultproperties.keyvaulturi) | where v contains 'kv1.vault.azure.net' | project id, v",
        );
        assert_eq!(
            right,
            vec![json!({"id": "/s/sa", "v": "https://KV1.vault.azure.net/"})]
        );
        let wrong = run_one(
            "resources | extend v = tostring(properties.encryption.keyVaultProperties.keyVaultUri) | project id, v",
        );
        assert_eq!(wrong, vec![json!({"id": "/s/sa", "v": ""})]);
    }

    #[test]
    fn the_who_uses_query_shape_runs() {
        let rows = vec![
            json!({"id": "/s/ws", "type": "microsoft.machinelearningservices/workspaces", "resourceGroup": "rg",
                "properties": {"encryption": {"keyVaultProperties": {"keyIdentifier": "https://kv1.vault.azure.net/keys/k/1"}},
                    "serviceProvisionedResourceGroup": "azureml-rg-ws_1"}}),
            json!({"id": "/s/srch", "type": "microsoft.search/searchservices", "resourceGroup": "azureml-rg-ws_1", "properties": {}}),
            json!({"id": "/s/other", "type": "microsoft.search/searchservices", "resourceGroup": "rg", "properties": {}}),
            json!({"id": "/s/kv", "type": "microsoft.keyvault/vaults", "resourceGroup": "azureml-rg-ws_1", "properties": {}}),
        ];
        let query = "resources | where type in~ ('microsoft.machinelearningservices/workspaces', 'microsoft.search/searchservices') \
            | extend workspaceKey = tostring(properties.encryption.keyVaultProperties.keyIdentifier), managedGroup = tostring(properties.serviceProvisionedResourceGroup) \
            | where workspaceKey contains 'kv1.vault.azure.net' or resourceGroup startswith 'azureml-rg-' \
            | project id, type, workspaceKey, managedGroup | order by id asc";
        let result = run(&parse(query).unwrap(), rows).unwrap();
        let ids: Vec<&str> = result.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids, ["/s/srch", "/s/ws"]);
        assert_eq!(result[1]["managedGroup"], "azureml-rg-ws_1");
    }

    #[test]
    fn unsupported_constructs_are_errors() {
        assert!(parse("resources | summarize count() by type").is_err());
        assert!(parse("securityresources").is_err());
        assert!(parse("resources | where name == 'x").is_err());
    }
}
