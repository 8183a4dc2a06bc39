//! Templates: each kept whole as one JSON record, beside who builds its environment (`builder`,
//! while a build is pending) and which build the environment is (`environment`).

use sandbox_api::Template;
use sqlx::{AssertSqlSafe, Row};

use crate::{corrupt_json, cursor, int, Page, Store, StoreError};

impl Store {
    /// Adds a template, its build held by `builder` if it has one to make; false if one of
    /// that name exists.
    pub async fn insert_template(&self, t: &Template, builder: Option<&str>) -> Result<bool, StoreError> {
        let record = serde_json::to_string(t).map_err(|e| corrupt_json(&t.name, e))?;
        let done = sqlx::query(
            "INSERT INTO templates (name, record, created_at, builder) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&t.name)
        .bind(record)
        .bind(t.created_at.to_rfc3339())
        .bind(builder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes over, for replica `me`, every pending template build whose builder lost its lease
    /// (`lease_ms`) or never had one, and with `own` those `me` held before a restart. One
    /// `UPDATE` decides: a build is taken by one replica.
    pub async fn claim_template_builds(&self, me: &str, lease_ms: u64, own: bool) -> Result<Vec<Template>, StoreError> {
        let now = self.backend.now_ms();
        let records: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE templates SET builder = $1
             WHERE builder IS NOT NULL AND (($3 = 1 AND builder = $1) OR (builder != $1 AND builder NOT IN
                (SELECT id FROM replicas WHERE adopted_by IS NULL AND heartbeat_ms >= {now} - $2)))
             RETURNING name, record"
        )))
        .bind(me)
        .bind(int(lease_ms))
        .bind(i64::from(own))
        .fetch_all(&self.pool)
        .await?;
        records.iter().map(|(name, r)| serde_json::from_str(r).map_err(|e| corrupt_json(name, e))).collect()
    }

    /// Records the end of template `t`'s build by `me` (its record as built, and `environment`,
    /// the build), unless another replica took the build over meanwhile or the template was
    /// deleted: then false, and this build is not the one to keep.
    pub async fn finish_template_build(
        &self,
        t: &Template,
        me: &str,
        environment: Option<&str>,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(t).map_err(|e| corrupt_json(&t.name, e))?;
        let done = sqlx::query(
            "UPDATE templates SET record = $2, builder = NULL, environment = $4 WHERE name = $1 AND builder = $3",
        )
        .bind(&t.name)
        .bind(record)
        .bind(me)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Which build template `name`'s environment is, if it has one.
    pub async fn template_environment(&self, name: &str) -> Result<Option<String>, StoreError> {
        let found: Option<Option<String>> = sqlx::query_scalar("SELECT environment FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.flatten())
    }

    pub async fn get_template(&self, name: &str) -> Result<Option<Template>, StoreError> {
        let record: Option<String> = sqlx::query_scalar("SELECT record FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        record.map(|r| serde_json::from_str(&r).map_err(|e| corrupt_json(name, e))).transpose()
    }

    pub async fn list_templates(&self) -> Result<Vec<Template>, StoreError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.page_templates(1000, cursor.as_deref(), None).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// At most `limit` templates, oldest first, after `cursor` (from the page before); if
    /// `tenant` is given, only the shared ones and that tenant's.
    pub async fn page_templates(
        &self,
        limit: usize,
        cursor: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Page<Template>, StoreError> {
        let (key, name) = cursor.map(cursor::decode).transpose()?.unwrap_or_default();
        let owner = self.backend.json_text("record", "tenant");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, record FROM templates WHERE (created_at, name) > ($1, $2)
                AND ($4 IS NULL OR COALESCE({owner}, $4) = $4)
             ORDER BY created_at, name LIMIT $3"
        )))
        .bind(key)
        .bind(name)
        .bind(int(limit as u64).saturating_add(1))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let mut items = Vec::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let record: String = row.try_get(1)?;
            items.push(serde_json::from_str::<Template>(&record).map_err(|e| corrupt_json(&name, e))?);
        }
        Ok(Page::of(items, limit, |t| (t.created_at.to_rfc3339(), t.name.clone())))
    }

    /// Removes a template; false if there was none of that name.
    pub async fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM templates WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether any template still names `image`.
    pub async fn image_in_use(&self, image: &str) -> Result<bool, StoreError> {
        let named = self.backend.json_text("record", "image");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM templates WHERE {named} = $1")))
            .bind(image)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}
