//! What lets a run take the last converged plan as it is (`quiet_plan`, `planning_generation`,
//! migration 0012): the plan of a real run that changed nothing, with a digest of what it was
//! made from. `plan::quiet` decides; this module only keeps the rows.

use sqlx::Row;

use super::{StateError, Store};

/// A converged run's plan and what it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietPlan {
    /// SHA-256 (hex) of the plan's inputs outside the planning tables (`plan::quiet`).
    pub inputs: String,
    /// Unix seconds: the `now` the plan was made with.
    pub planned_at: i64,
    /// The run that made it first.
    pub run_id: i64,
    /// The plan, JSON.
    pub plan: String,
}

impl Store {
    /// How many writes the tables the planner reads (managed objects, journal, migration
    /// cohort) have seen; bumped by triggers, so no writer can forget it.
    pub async fn planning_generation(&self) -> Result<i64, StateError> {
        Ok(
            sqlx::query_scalar("SELECT generation FROM planning_generation WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn quiet_plan(&self) -> Result<Option<QuietPlan>, StateError> {
        let row =
            sqlx::query("SELECT inputs, planned_at, run_id, plan FROM quiet_plan WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| QuietPlan {
            inputs: r.get(0),
            planned_at: r.get(1),
            run_id: r.get(2),
            plan: r.get(3),
        }))
    }

    /// Keeps `plan` for the next run, or (`None`) forgets the one kept.
    pub async fn set_quiet_plan(
        &self,
        plan: Option<&QuietPlan>,
        now: i64,
    ) -> Result<(), StateError> {
        let Some(p) = plan else {
            sqlx::query("DELETE FROM quiet_plan")
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO quiet_plan (id, inputs, planned_at, run_id, plan, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET inputs = ?1, planned_at = ?2, run_id = ?3,
                 plan = ?4, updated_at = ?5",
        )
        .bind(&p.inputs)
        .bind(p.planned_at)
        .bind(p.run_id)
        .bind(&p.plan)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the grace period of a disabled object ends in `(after, upto]` (Unix seconds):
    /// a plan made at `after` did not delete it, a plan made at `upto` does.
    pub async fn grace_ends_between(&self, after: i64, upto: i64) -> Result<bool, StateError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM managed_objects
             WHERE stage = 'disabled' AND delete_due_at > ?1 AND delete_due_at <= ?2",
        )
        .bind(after)
        .bind(upto)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}
