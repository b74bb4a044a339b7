//! etcd's alarms (`etcdserver/api/v3alarm`) as replicated state: ACTIVATE
//! and DEACTIVATE are ordered commands, so every replica holds the same
//! alarms; GET is answered locally.
//!
//! The store's own space alarm is not stored: NOSPACE is raised exactly
//! while [`Store::space_alarm`] holds (the API lists it for every member).
//! A stored NOSPACE (activated by a client, as etcd's server does when a
//! member passes its quota) refuses writes as the quota does, until it is
//! disarmed: etcd's capped applier.

use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
};
use crate::store::{header, Store};

impl Store {
    /// The stored alarms, ascending by (member id, alarm type).
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms
            .iter()
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// A stored NOSPACE alarm of any member: writes are refused until it is
    /// disarmed (etcd's capped applier).
    pub(crate) fn nospace_armed(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, a)| a == AlarmType::Nospace as i32)
    }

    /// etcd's `applierV3backend.Alarm`: ACTIVATE stores (member, alarm) and
    /// answers it if it was not active; DEACTIVATE removes it and answers
    /// it if it was; GET answers the stored alarms of that type (NONE: all).
    /// Activating NONE or an unknown type changes nothing. Does not change
    /// the revision.
    pub(crate) fn apply_alarm(&mut self, r: &AlarmRequest) -> AlarmResponse {
        let known = AlarmType::try_from(r.alarm).is_ok_and(|a| a != AlarmType::None);
        let key = (r.member_id, r.alarm);
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Activate) if known && self.alarms.insert(key) => vec![key],
            Ok(AlarmAction::Deactivate) if self.alarms.remove(&key) => vec![key],
            Ok(AlarmAction::Get) => self
                .alarms
                .iter()
                .copied()
                .filter(|&(_, a)| r.alarm == AlarmType::None as i32 || a == r.alarm)
                .collect(),
            _ => Vec::new(),
        };
        AlarmResponse {
            header: header(self.current_revision),
            alarms: alarms
                .into_iter()
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::bftdkv::Command;
    use crate::pb::etcdserverpb::PutRequest;
    use crate::{KvError, Response};

    fn alarm(s: &mut Store, action: AlarmAction, member_id: u64, a: AlarmType) -> Vec<(u64, i32)> {
        let c: Command = AlarmRequest {
            action: action as i32,
            member_id,
            alarm: a as i32,
        }
        .into();
        match s.apply(&c).unwrap() {
            Response::Alarm(r) => r.alarms.iter().map(|m| (m.member_id, m.alarm)).collect(),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn alarms_activate_list_and_disarm_as_etcd_and_nospace_caps_writes() {
        let mut s = Store::new();
        let nospace = AlarmType::Nospace;
        let corrupt = AlarmType::Corrupt;
        assert_eq!(
            alarm(&mut s, AlarmAction::Activate, 5, corrupt),
            vec![(5, 2)]
        );
        assert!(
            alarm(&mut s, AlarmAction::Activate, 5, corrupt).is_empty(),
            "already active"
        );
        assert!(alarm(&mut s, AlarmAction::Activate, 5, AlarmType::None).is_empty());
        assert_eq!(
            alarm(&mut s, AlarmAction::Activate, 0, nospace),
            vec![(0, 1)]
        );
        assert_eq!(
            alarm(&mut s, AlarmAction::Get, 0, AlarmType::None),
            vec![(0, 1), (5, 2)]
        );
        assert_eq!(alarm(&mut s, AlarmAction::Get, 0, corrupt), vec![(5, 2)]);
        let put: Command = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }
        .into();
        assert_eq!(s.apply(&put), Err(KvError::NoSpace), "NOSPACE caps writes");
        // The alarms are state: a restored store has them.
        assert_eq!(Store::restore(&s.snapshot()).unwrap(), s);
        assert_eq!(
            alarm(&mut s, AlarmAction::Deactivate, 0, nospace),
            vec![(0, 1)]
        );
        assert!(alarm(&mut s, AlarmAction::Deactivate, 0, nospace).is_empty());
        assert!(s.apply(&put).is_ok(), "disarmed: writes again");
        assert_eq!(s.alarms().len(), 1);
    }
}
