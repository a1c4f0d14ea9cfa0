//! `AuthorizationPolicy` validation, following Istio's `ValidateAuthorizationPolicy` and the
//! attribute checks of `pkg/config/security`.

use super::common::validate_workload_selector;
use super::workload_entry::{is_cidr, is_ip};
use super::{Context, Validate};
use crate::common::WorkloadSelector;
use crate::path::Path;
use crate::report::Report;
use crate::security::{
    AuthorizationAction, AuthorizationPolicy, Operation, PolicyTargetReference, Source,
};

/// Istio's `validateOneOfSelectorType`, `validateWorkloadSelector` and
/// `validatePolicyTargetReference(s)`, shared with `RequestAuthentication`.
pub(super) fn validate_policy_targets(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    spec: &Path<'_>,
    out: &mut Report,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        let at = if target_ref.is_some() {
            spec.field("targetRef")
        } else {
            spec.field("targetRefs")
        };
        out.error(&at, "only one of targetRefs or workloadSelector can be set");
    }
    if let Some(sel) = selector {
        let sp = spec.field("selector");
        validate_workload_selector(sel, &sp, out);
        if sel.match_labels.is_empty() {
            out.warn(&sp, "workload selector specified without labels");
        }
    }
    if let Some(r) = target_ref {
        validate_target_ref(r, &spec.field("targetRef"), out);
    }
    let refs = spec.field("targetRefs");
    for (i, r) in target_refs.iter().enumerate() {
        validate_target_ref(r, &refs.index(i), out);
    }
}

/// Kinds a policy may target (group, kind); the core group may be written `""` or `core`.
const ALLOWED_TARGET_REFS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

fn validate_target_ref(r: &PolicyTargetReference, path: &Path<'_>, out: &mut Report) {
    if r.name.is_empty() {
        out.error(&path.field("name"), "targetRef name must be set");
    }
    if !r.namespace.is_empty() {
        out.error(
            &path.field("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = if r.group.is_empty() {
        "core"
    } else {
        r.group.as_str()
    };
    if !ALLOWED_TARGET_REFS
        .iter()
        .any(|(g, k)| *g == group && *k == r.kind)
    {
        out.error(
            &path.field("kind"),
            format!(
                "targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass but was {}/{}",
                r.group, r.kind
            ),
        );
    }
}

/// Istio's `security.ValidateIPs` for one value.
fn validate_ip_block(v: &str) -> Result<(), String> {
    if v.contains('/') {
        if is_cidr(v) {
            Ok(())
        } else {
            Err(format!("bad CIDR range ({v})"))
        }
    } else if is_ip(v) {
        Ok(())
    } else {
        Err(format!("bad IP address ({v})"))
    }
}

/// Istio's `security.ValidatePorts` for one value: a decimal number in 0..=65535.
fn validate_port_string(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 5
        && v.bytes().all(|b| b.is_ascii_digit())
        && v.parse::<u32>().is_ok_and(|p| p <= 65535);
    if ok {
        Ok(())
    } else {
        Err(format!("bad port ({v}): must be a number in 0..65535"))
    }
}

/// Istio's `validateMapKey`: `a[b]` with a non-empty `a` and `b`.
fn validate_map_key(key: &str) -> Result<(), String> {
    if let Some(open) = key.find('[') {
        if key.ends_with(']') && open > 0 && open + 2 < key.len() {
            return Ok(());
        }
    }
    Err(format!("bad key ({key}): should have format a[b]"))
}

/// What kind of values a condition key takes.
enum AttrValues {
    Any,
    Ips,
    Ports,
}

/// Istio's `security.ValidateAttribute`, split into the key check and the value kind.
fn attribute_kind(key: &str) -> Result<AttrValues, String> {
    Ok(match key {
        "source.ip" | "remote.ip" | "destination.ip" => AttrValues::Ips,
        "destination.port" => AttrValues::Ports,
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => AttrValues::Any,
        "destination.namespace" => {
            return Err(format!(
                "attribute {key} is replaced by the metadata.namespace"
            ))
        }
        "destination.name" | "destination.user" => {
            return Err(format!(
                "deprecated attribute {key}: only supported in v1alpha1"
            ))
        }
        k if k.starts_with("request.headers")
            || k.starts_with("request.auth.claims")
            || k.starts_with("experimental.envoy.filters.") =>
        {
            validate_map_key(k)?;
            AttrValues::Any
        }
        k if k.starts_with("destination.labels") => {
            return Err(format!(
                "attribute {key} is replaced by the workload selector"
            ))
        }
        _ => return Err(format!("unknown attribute: {key}")),
    })
}

/// Istio matches rule strings exactly, by prefix (`abc*`), by suffix (`*abc`) or by presence
/// (`*`); a `*` anywhere else is matched literally.
fn wildcard_misplaced(v: &str) -> bool {
    if v == "*" || !v.contains('*') {
        return false;
    }
    if let Some(rest) = v.strip_prefix('*') {
        return rest.contains('*');
    }
    if let Some(head) = v.strip_suffix('*') {
        return head.contains('*');
    }
    true
}

/// Non-empty values (`CheckEmptyValues`), plus a warning for misplaced wildcards when asked.
fn check_values(values: &[String], name: &str, path: &Path<'_>, wildcards: bool, out: &mut Report) {
    let list = path.field(name);
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            out.error(
                &list.index(i),
                format!("empty value not allowed, found in {name}"),
            );
        } else if wildcards && wildcard_misplaced(v) {
            out.warn(
                &list.index(i),
                format!("wildcard matching is only supported as a prefix, a suffix or the whole value; {v:?} will be matched literally"),
            );
        }
    }
}

/// Checks every value of the list field `name`: non-empty, and valid by `check`.
fn check_each(
    values: &[String],
    name: &str,
    path: &Path<'_>,
    out: &mut Report,
    check: fn(&str) -> Result<(), String>,
) {
    let list = path.field(name);
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            out.error(
                &list.index(i),
                format!("empty value not allowed, found in {name}"),
            );
        } else if let Err(e) = check(v) {
            out.error(&list.index(i), e);
        }
    }
}

fn check_ips(values: &[String], name: &str, path: &Path<'_>, out: &mut Report) {
    check_each(values, name, path, out, validate_ip_block);
}

fn check_ports(values: &[String], name: &str, path: &Path<'_>, out: &mut Report) {
    check_each(values, name, path, out, validate_port_string);
}

fn check_service_accounts(values: &[String], name: &str, path: &Path<'_>, out: &mut Report) {
    let list = path.field(name);
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            out.error(
                &list.index(i),
                format!("empty value not allowed, found in {name}"),
            );
            continue;
        }
        let ok = matches!(v.split_once('/'), Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/'));
        if !ok {
            out.error(
                &list.index(i),
                format!("service account {v:?} must be in the form <namespace>/<name>"),
            );
        }
    }
}

/// Istio's `CheckValidPathTemplate`: path templates (`{*}`, `{**}`) may not use named
/// variables, empty braces, or bare `*`/`**` segments.
fn unsupported_path_template(path: &str) -> bool {
    if !(path.contains("{*}") || path.contains("{**}")) {
        return false;
    }
    let b = path.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            // `{word}`, `{}` or `/{word=*}` / `/{word=**}`
            b'{' => {
                let rest = &b[i + 1..];
                let word = rest
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                match rest.get(word) {
                    Some(b'}') => return true,
                    Some(b'=') if word > 0 && i > 0 && b[i - 1] == b'/' => {
                        let after = &rest[word + 1..];
                        if after.starts_with(b"*}") || after.starts_with(b"**}") {
                            return true;
                        }
                    }
                    _ => {}
                }
            }
            // `/*`, `/**`, `*/` or `**/`
            b'*' => {
                let prev = if i > 0 { b[i - 1] } else { 0 };
                let next = b.get(i + 1).copied().unwrap_or(0);
                if prev == b'/' || next == b'/' {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

fn validate_source(src: &Source, path: &Path<'_>, custom: bool, out: &mut Report) {
    if (src.principals.len()
        + src.not_principals.len()
        + src.namespaces.len()
        + src.not_namespaces.len()
        > 0)
        && (src.service_accounts.len() + src.not_service_accounts.len() > 0)
    {
        out.error(
            path,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    let lists: [(&[String], &str); 12] = [
        (&src.principals, "principals"),
        (&src.not_principals, "notPrincipals"),
        (&src.request_principals, "requestPrincipals"),
        (&src.not_request_principals, "notRequestPrincipals"),
        (&src.namespaces, "namespaces"),
        (&src.not_namespaces, "notNamespaces"),
        (&src.service_accounts, "serviceAccounts"),
        (&src.not_service_accounts, "notServiceAccounts"),
        (&src.ip_blocks, "ipBlocks"),
        (&src.not_ip_blocks, "notIpBlocks"),
        (&src.remote_ip_blocks, "remoteIpBlocks"),
        (&src.not_remote_ip_blocks, "notRemoteIpBlocks"),
    ];
    if lists.iter().all(|(l, _)| l.is_empty()) {
        out.error(path, "`from.source` must not be empty");
    }
    for (values, name) in &lists[..6] {
        check_values(values, name, path, true, out);
    }
    check_service_accounts(&src.service_accounts, "serviceAccounts", path, out);
    check_service_accounts(&src.not_service_accounts, "notServiceAccounts", path, out);
    for (values, name) in &lists[8..] {
        check_ips(values, name, path, out);
    }
    if custom {
        for (values, name) in &lists[..8] {
            if !values.is_empty() {
                out.error(
                    &path.field(name),
                    format!("{name} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
}

fn validate_operation(op: &Operation, path: &Path<'_>, out: &mut Report) {
    let lists: [(&[String], &str); 8] = [
        (&op.hosts, "hosts"),
        (&op.not_hosts, "notHosts"),
        (&op.ports, "ports"),
        (&op.not_ports, "notPorts"),
        (&op.methods, "methods"),
        (&op.not_methods, "notMethods"),
        (&op.paths, "paths"),
        (&op.not_paths, "notPaths"),
    ];
    if lists.iter().all(|(l, _)| l.is_empty()) {
        out.error(path, "`to.operation` must not be empty");
    }
    check_values(&op.hosts, "hosts", path, true, out);
    check_values(&op.not_hosts, "notHosts", path, true, out);
    check_ports(&op.ports, "ports", path, out);
    check_ports(&op.not_ports, "notPorts", path, out);
    check_values(&op.methods, "methods", path, false, out);
    check_values(&op.not_methods, "notMethods", path, false, out);
    for (values, name) in [(&op.paths, "paths"), (&op.not_paths, "notPaths")] {
        let list = path.field(name);
        for (i, v) in values.iter().enumerate() {
            let p = list.index(i);
            if v.is_empty() {
                out.error(&p, format!("empty value not allowed, found in {name}"));
            } else if unsupported_path_template(v) {
                out.error(
                    &p,
                    format!("invalid or unsupported path template, found in {name}"),
                );
            } else if !(v.contains("{*}") || v.contains("{**}")) && wildcard_misplaced(v) {
                out.warn(
                    &p,
                    format!("wildcard matching is only supported as a prefix, a suffix or the whole value; {v:?} will be matched literally"),
                );
            }
        }
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, _cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        validate_policy_targets(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            &spec,
            out,
        );
        let custom = self.action == AuthorizationAction::Custom;
        if custom {
            if self.rules.is_none() {
                out.error(
                    &spec.field("rules"),
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                );
            } else if self.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                out.error(
                    &spec.field("provider").field("name"),
                    "`provider.name` must not be empty",
                );
            }
        }
        if self.provider.is_some() && !custom {
            out.error(
                &spec.field("provider"),
                format!(
                    "`provider` must not be with non CUSTOM action, found {}",
                    action_name(self.action)
                ),
            );
        }
        if self.action == AuthorizationAction::Deny && self.rules.is_none() {
            out.error(
                &spec.field("rules"),
                "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
            );
        }
        let rules_path = spec.field("rules");
        for (i, rule) in self.rules.iter().flatten().enumerate() {
            let rp = rules_path.index(i);
            let mut tcp_in_from = false;
            let mut tcp_in_to = false;
            let mut from_exists = false;
            let mut to_exists = false;
            if let Some(from) = &rule.from {
                let fp = rp.field("from");
                if from.is_empty() {
                    out.error(&fp, "`from` must not be empty");
                }
                for (j, f) in from.iter().enumerate() {
                    let p = fp.index(j);
                    match &f.source {
                        None => out.error(&p, "`from.source` must not be nil"),
                        Some(src) => {
                            from_exists = true;
                            validate_source(src, &p.field("source"), custom, out);
                            tcp_in_from |= !(src.principals.is_empty()
                                && src.not_principals.is_empty()
                                && src.ip_blocks.is_empty()
                                && src.not_ip_blocks.is_empty()
                                && src.namespaces.is_empty()
                                && src.not_namespaces.is_empty()
                                && src.remote_ip_blocks.is_empty()
                                && src.not_remote_ip_blocks.is_empty()
                                && src.service_accounts.is_empty()
                                && src.not_service_accounts.is_empty());
                        }
                    }
                }
            }
            if let Some(to) = &rule.to {
                let tp = rp.field("to");
                if to.is_empty() {
                    out.error(&tp, "`to` must not be empty");
                }
                for (j, t) in to.iter().enumerate() {
                    let p = tp.index(j);
                    match &t.operation {
                        None => out.error(&p, "`to.operation` must not be nil"),
                        Some(op) => {
                            to_exists = true;
                            validate_operation(op, &p.field("operation"), out);
                            tcp_in_to |= !(op.ports.is_empty() && op.not_ports.is_empty());
                        }
                    }
                }
            }
            let wp = rp.field("when");
            for (j, cond) in rule.when.iter().enumerate() {
                let cp = wp.index(j);
                let key = cond.key.as_str();
                if key.is_empty() {
                    out.error(&cp.field("key"), "`key` must not be empty");
                    continue;
                }
                if custom
                    && (matches!(
                        key,
                        "source.namespace" | "source.serviceAccount" | "source.principal"
                    ) || key.starts_with("request.auth."))
                {
                    out.error(
                        &cp.field("key"),
                        format!("{key} is currently not supported with CUSTOM action"),
                    );
                }
                if cond.values.is_empty() && cond.not_values.is_empty() {
                    out.error(
                        &cp,
                        format!(
                            "at least one of `values` or `notValues` must be set for key {key}"
                        ),
                    );
                    continue;
                }
                let kind = match attribute_kind(key) {
                    Ok(kind) => kind,
                    Err(e) => {
                        out.error(&cp.field("key"), format!("invalid `key` {key}: {e}"));
                        continue;
                    }
                };
                for (values, name, label) in [
                    (&cond.values, "values", "value"),
                    (&cond.not_values, "notValues", "notValue"),
                ] {
                    let list = cp.field(name);
                    for (k, v) in values.iter().enumerate() {
                        let result = if v.is_empty() {
                            Err(format!("empty value not allowed, found in {key}"))
                        } else {
                            match kind {
                                AttrValues::Any => Ok(()),
                                AttrValues::Ips => validate_ip_block(v),
                                AttrValues::Ports => validate_port_string(v),
                            }
                        };
                        if let Err(e) = result {
                            out.error(
                                &list.index(k),
                                format!("invalid `{label}` for `key` {key}: {e}"),
                            );
                        }
                    }
                }
            }
            if ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
                && self.action == AuthorizationAction::Deny
            {
                out.warn(
                    &rp,
                    "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
                );
            }
        }
    }
}

fn action_name(a: AuthorizationAction) -> &'static str {
    match a {
        AuthorizationAction::Allow => "ALLOW",
        AuthorizationAction::Deny => "DENY",
        AuthorizationAction::Audit => "AUDIT",
        AuthorizationAction::Custom => "CUSTOM",
    }
}
