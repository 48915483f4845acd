-- 0007 rebuilt `journal` and with it dropped the index 0006 made for the rolling removal
-- windows (`Store::recent_removals`, read by every run and by `status`).
CREATE INDEX IF NOT EXISTS journal_removals ON journal (finished_at) WHERE op IN ('disable', 'delete');
