//! `status`: the last runs, managed objects, pending deletions and quarantined entries, read
//! from the state store.

use serde_json::json;

use super::{CommandError, Exit};
use crate::cli::{StatusArgs, StatusFormat};
use crate::config::Config;
use crate::plan;
use crate::state::{Stage, Store};

pub async fn status(config: &Config, args: &StatusArgs) -> Result<Exit, CommandError> {
    let store = Store::open(&config.state.path).await?;
    let objects = store.objects().await?;
    let runs = store.runs(10).await?;
    let quarantine = store.quarantine().await?;
    store.close().await;
    let count = |s: Stage| objects.iter().filter(|o| o.stage == s).count();
    let pending: Vec<_> = objects
        .iter()
        .filter(|o| o.stage == Stage::Disabled)
        .collect();
    match args.format {
        StatusFormat::Json => {
            let v = json!({
                "state": config.state.path,
                "managed": {"active": count(Stage::Active), "disabled": count(Stage::Disabled), "deleted": count(Stage::Deleted)},
                "pending_deletions": pending.iter().map(|o| json!({
                    "anchor": o.anchor, "uid": o.uid, "disabled_at": o.disabled_at.map(plan::rfc3339),
                    "delete_due_at": o.delete_due_at.map(plan::rfc3339)})).collect::<Vec<_>>(),
                "runs": runs,
                "quarantined": quarantine,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("status serialises")
            );
        }
        StatusFormat::Text => {
            println!("state store: {}", config.state.path.display());
            println!(
                "managed objects: {} active, {} disabled, {} deleted",
                count(Stage::Active),
                count(Stage::Disabled),
                count(Stage::Deleted)
            );
            if !pending.is_empty() {
                println!("\npending deletions ({}):", pending.len());
                for o in pending {
                    println!(
                        "  {:<16} due {}",
                        o.uid,
                        o.delete_due_at.map(plan::rfc3339).unwrap_or_default()
                    );
                }
            }
            println!("\nlast runs:");
            if runs.is_empty() {
                println!("  none yet");
            }
            for r in &runs {
                println!(
                    "  #{:<4} {} {:<8} {:<5} {:<8} {:>6} entries  {}",
                    r.id,
                    plan::rfc3339(r.started_at),
                    r.mode,
                    r.scope,
                    r.outcome,
                    r.source_count
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.error.as_deref().unwrap_or("")
                );
            }
            if !quarantine.is_empty() {
                println!("\nquarantined ({}):", quarantine.len());
                for q in &quarantine {
                    println!("  ! {}\n      {}: {}", q.dn, q.field, q.reason);
                }
            }
        }
    }
    Ok(Exit::Ok)
}
