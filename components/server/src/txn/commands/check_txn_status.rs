//! CheckTxnStatus, CheckSecondaryLocks and TxnHeartBeat: what a reader
//! asks of a transaction whose lock is in its way.

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::actions::{self, CheckTxnStatusArgs};
use atoll_txn::TimeStamp;

use crate::txn::{Result, SecondaryLocks, TxnStatus, TxnStorage};

impl<E: KvEngine> TxnStorage<E> {
    pub async fn check_txn_status(
        &self,
        ctx: &Context,
        primary: &[u8],
        args: CheckTxnStatusArgs,
    ) -> Result<TxnStatus> {
        let keys = self.keys("kv_check_txn_status", ctx, [primary])?;
        for ts in [args.lock_ts, args.caller_start_ts, args.current_ts] {
            self.update_max_ts(ts).await?;
        }
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::check_txn_status(txn, reader, &keys[0], &args)?)
        })
        .await
    }

    pub async fn check_secondary_locks(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
    ) -> Result<SecondaryLocks> {
        let keys = self.keys("kv_check_secondary_locks", ctx, raw.iter().map(Vec::as_slice))?;
        self.update_max_ts(start_ts).await?;
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::check_secondary_locks(txn, reader, &keys, start_ts)?)
        })
        .await
    }

    pub async fn txn_heart_beat(
        &self,
        ctx: &Context,
        primary: &[u8],
        start_ts: TimeStamp,
        advise_ttl: u64,
    ) -> Result<u64> {
        let keys = self.keys("kv_txn_heart_beat", ctx, [primary])?;
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::txn_heart_beat(txn, reader, &keys[0], start_ts, advise_ttl)?)
        })
        .await
    }
}
