//! `publish` of an ephemeral publication (`ephemeral: true`, or absent in a namespace whose
//! mode is `default`): the same subscription and capability checks as a durable publish, then
//! the connection's and the room's ephemeral rates, then the broker tier. The reply is `{}`:
//! there is no offset to report.

use super::*;
use crate::ephemeral::EphemeralRate;

impl<L: EdgeLink> Session<L> {
    pub(super) async fn publish_ephemeral(&mut self, p: Publish) -> Result<ReplyOk, ErrorBody> {
        let limits = &self.node.config.limits;
        Rare::of(&mut self.rare)
            .ephemeral
            .get_or_insert_with(|| EphemeralRate::new(limits))
            .check(limits)?;
        let conn = self.connected();
        let from = Sender {
            user: conn.identity.user.clone(),
            client: conn.client.clone(),
        };
        self.node
            .publish_ephemeral(p.room, p.data, Some(from))
            .await?;
        Ok(ReplyOk::Empty(Empty {}))
    }
}
