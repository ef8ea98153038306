//! What the benchmark examples of both services share: a Clerk-sized event body, and CPU
//! time from /proc.

use std::collections::HashMap;

/// A Clerk `user.updated` webhook body of about 3 KB (what a real user object with a few
/// email addresses, an external account and metadata weighs): user `user`'s event of
/// round `round`, its `updated_at` (and the envelope's `timestamp`) `updated_at`.
pub fn clerk_user_body(user: usize, round: usize, updated_at: i64) -> Vec<u8> {
    let id = format!("user_bench{user:05}");
    let email = |n: usize| {
        serde_json::json!({
            "id": format!("idn_{user}_{n}"), "object": "email_address",
            "email_address": format!("person{user}.{n}@example.com"),
            "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": 1_732_464_600_000_i64},
            "linked_to": [], "created_at": 1_732_464_000_000_i64, "updated_at": 1_732_464_000_000_i64,
        })
    };
    let data = serde_json::json!({
        "id": id, "object": "user", "first_name": format!("First{round}"), "last_name": "Benchmark",
        "username": format!("bench{user}"), "image_url": format!("https://img.clerk.com/{}", "x".repeat(120)),
        "primary_email_address_id": format!("idn_{user}_0"),
        "email_addresses": [email(0), email(1), email(2)],
        "phone_numbers": [], "web3_wallets": [], "passkeys": [],
        "external_accounts": [{"id": format!("eac_{user}"), "provider": "oauth_google", "approved_scopes": "email profile openid", "email_address": format!("person{user}@gmail.com"), "first_name": "First", "last_name": "Benchmark", "avatar_url": "https://lh3.googleusercontent.com/a/abcdefghijklmnopqrstuvwxyz0123456789", "public_metadata": {}, "verification": {"status": "verified", "strategy": "oauth_google"}}],
        "public_metadata": {"plan": "pro", "seats": 5, "features": ["a", "b", "c"]},
        "private_metadata": {"crm_id": format!("crm-{user:08}"), "notes": "y".repeat(300)},
        "unsafe_metadata": {"onboarding": {"step": round % 5, "done": false}},
        "password_enabled": true, "two_factor_enabled": false, "totp_enabled": false, "backup_code_enabled": false,
        "banned": false, "locked": false, "external_id": format!("ext-{user}"),
        "last_sign_in_at": updated_at - 1000, "last_active_at": updated_at, "created_at": 1_732_464_000_000_i64,
        "updated_at": updated_at,
    });
    serde_json::to_vec(&serde_json::json!({"type": "user.updated", "object": "event", "data": data, "timestamp": updated_at, "instance_id": "ins_bench"})).expect("JSON")
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). Linux
/// reports them in USER_HZ, 100 a second on every architecture we ship.
pub fn cpu_ticks(pid: u32) -> std::io::Result<u64> {
    Ok(stat(pid)?.own)
}

/// CPU seconds of `pid` and every process under it, those already gone included: a
/// server of many processes (PostgreSQL forks a backend per connection) counted whole.
/// A child that exits between two readings and was reaped counts in its parent's
/// cutime/cstime, one that is still running in its own.
pub fn tree_cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let root = stat(pid)?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    // Each process's own time and its reaped children's.
    let mut ticks_of: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Gone since the listing: its time is in its parent's reaped total.
        if let Ok(s) = stat(p) {
            children.entry(s.parent).or_default().push(p);
            ticks_of.insert(p, s.own + s.reaped);
        }
    }
    let mut ticks = root.own + root.reaped;
    let mut stack = children.remove(&pid).unwrap_or_default();
    while let Some(p) = stack.pop() {
        ticks += ticks_of.get(&p).copied().unwrap_or(0);
        stack.extend(children.remove(&p).unwrap_or_default());
    }
    Ok(ticks as f64 / 100.0)
}

struct Stat {
    parent: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: the children it reaped.
    reaped: u64,
}

fn stat(pid: u32) -> std::io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed stat");
    // The command name may hold spaces; the fields after it start at the last ')'.
    let after = text.rsplit_once(')').ok_or_else(malformed)?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(malformed)
    };
    Ok(Stat {
        parent: field(1)? as u32,
        own: field(11)? + field(12)?,
        reaped: field(13)? + field(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_counts_at_least_its_root() {
        let me = std::process::id();
        // Burn a little CPU so the figures are not both zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let own = cpu_ticks(me).unwrap() as f64 / 100.0;
        let tree = tree_cpu_seconds(me).unwrap();
        assert!(tree >= own, "tree {tree} < own {own}");
        assert!(cpu_ticks(u32::MAX).is_err());
    }
}
