//! `managed-resources.tamper`: nobody but Azure ML writes to or deletes from the workspace's
//! service-provisioned resource group.
//!
//! Requirement: the Microsoft-managed resources Azure ML creates for a CMK workspace (the
//! `serviceProvisionedResourceGroup`, usually `azureml-rg-…`, holding the Cosmos DB, AI Search
//! and Storage resources encrypted with the key) must not be deleted or taken over (reference
//! azure-notes Trap T21). Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: none (no anchor watches the managed resource group).
//!
//! This rule judges the triggering event, not standing state: it needs an ARM write or delete
//! whose resource lies in (or is) that resource group, in the workspace's subscription. Without
//! such an event it does not apply, and its findings never resolve on a later evaluation.
//!
//! How Azure ML is recognised: ARM events carry the caller's application id (`appid` claim,
//! `Trigger::caller_app_id`) and object id (`Trigger::caller_object_id`). Azure ML acts through
//! its first-party service principal, app id `0736f41a-0425-4b46-bdb5-1563eff02385` in every
//! tenant, which is recognised without configuration. Its object id differs per tenant; the policy lists
//! it under `[rules."managed-resources.tamper"] azure_ml_object_ids` (find it with
//! `az ad sp show --id 0736f41a-0425-4b46-bdb5-1563eff02385 --query id -o tsv`). The workspace's
//! own managed identities (system and user-assigned) count as Azure ML too. Any other caller,
//! or an event that names no caller, is tampering.
//!
//! Compliant: `Microsoft.DocumentDB/databaseAccounts/write` in `azureml-rg-ws_…` by the
//! configured Azure ML object id.
//! Non-compliant: `Microsoft.Storage/storageAccounts/delete` in `azureml-rg-ws_…` by a user.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule, Status};
use crate::catalogue::RuleId;
use crate::ids::ArmResourceId;
use crate::intake::{ChangeKind, Target};
use crate::outcome::Severity;
use crate::snapshot::Workspace;

pub(super) const RULE: Rule = Rule {
    id: RuleId::ManagedResourcesTamper,
    judge: check,
};

/// The application id of Azure Machine Learning's first-party service principal (the same in
/// every tenant); ARM events carry it in the `appid` claim when Azure ML itself acts.
pub const AZURE_ML_APP_ID: &str = "0736f41a-0425-4b46-bdb5-1563eff02385";

const EXPECTED: &str =
    "only Azure ML writes to or deletes from the workspace's service-provisioned resource group";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let workspace_resource = links.workspace;
    let not_applicable = |why: &'static str| {
        let resource = workspace_resource.to_owned();
        Checks::One(Check::new(
            RULE.id,
            resource,
            Status::NotApplicable,
            why,
            EXPECTED,
        ))
    };
    let Some(trigger) = context.trigger else {
        return not_applicable("no event: the rule judges writes and deletes as they happen");
    };
    let verb = match trigger.change {
        ChangeKind::Write => "write",
        ChangeKind::Delete => "delete",
        _ => return not_applicable("the event is not a write or a delete"),
    };
    let Target::Arm { id: target, .. } = &trigger.target else {
        return not_applicable("the event is not about an ARM resource");
    };
    let workspace = match chain::workspace(snapshot) {
        Ok(workspace) => workspace,
        Err(gate) => {
            return Checks::One(gate.check(RULE.id, workspace_resource.to_owned(), EXPECTED));
        }
    };
    let Some(managed_group) = managed_resource_group(workspace) else {
        return not_applicable("the workspace has no service-provisioned resource group");
    };
    let in_group = target.subscription() == snapshot.workspace_id.subscription()
        && target
            .resource_group()
            .is_some_and(|group| group.eq_ignore_ascii_case(&managed_group));
    if !in_group {
        return not_applicable("the event is outside the service-provisioned resource group");
    }
    let operation = trigger.operation.as_deref().unwrap_or(verb);
    let caller = trigger.caller_object_id.as_deref();
    if trigger
        .caller_app_id
        .as_deref()
        .is_some_and(|app| app.eq_ignore_ascii_case(AZURE_ML_APP_ID))
    {
        let why = format!("{operation} on {target} by Azure ML (app id {AZURE_ML_APP_ID})");
        return Checks::One(Gate::NotApplicable(why).check(RULE.id, target.to_string(), EXPECTED));
    }
    if let Some(caller) = caller
        && is_azure_ml(caller, workspace, context.policy.azure_ml_object_ids())
    {
        let why = format!("{operation} on {target} by Azure ML ({caller})");
        return Checks::One(Gate::NotApplicable(why).check(RULE.id, target.to_string(), EXPECTED));
    }
    let by = match caller {
        Some(caller) => format!("object id {caller}, not a configured Azure ML identity"),
        None => "a caller the event does not name".to_owned(),
    };
    Checks::One(Check::fail(
        RULE.id,
        target.to_string(),
        Severity::High,
        format!(
            "{operation} ({verb}) in the service-provisioned resource group {managed_group} by {by} (event {})",
            trigger.event_id
        ),
        EXPECTED,
    ))
}

/// The managed resource group's name; the property may hold a name or an ARM id.
fn managed_resource_group(workspace: &Workspace) -> Option<String> {
    let value = workspace
        .service_provisioned_resource_group
        .as_deref()?
        .trim();
    if value.is_empty() {
        return None;
    }
    // A name (the usual value) is no ARM id: no need to ask the parser, which would refuse it.
    if !value.starts_with('/') {
        return Some(value.to_owned());
    }
    match ArmResourceId::parse(value) {
        Ok(id) => id.resource_group().map(str::to_owned),
        Err(_) => Some(value.to_owned()),
    }
}

fn is_azure_ml(caller: &str, workspace: &Workspace, azure_ml_object_ids: &[String]) -> bool {
    let identity = workspace.identity.as_ref();
    let system = identity.and_then(|i| i.principal_id.as_deref());
    let user_assigned = identity
        .into_iter()
        .flat_map(|i| &i.user_assigned)
        .filter_map(|u| u.principal_id.as_deref());
    azure_ml_object_ids
        .iter()
        .map(String::as_str)
        .chain(system)
        .chain(user_assigned)
        .any(|trusted| trusted.eq_ignore_ascii_case(caller))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::ids::SubscriptionId;
    use crate::intake::{ResourceKind, Trigger};
    use crate::policy::Policy;
    use crate::snapshot::Snapshot;

    const AZURE_ML: &str = "dddddddd-0000-0000-0000-000000000001";
    const USER: &str = "eeeeeeee-0000-0000-0000-000000000001";

    fn trigger(resource: &str, change: ChangeKind, caller: Option<&str>) -> Trigger {
        Trigger {
            event_id: "event-1".into(),
            event_type: "Microsoft.Resources.ResourceWriteSuccess".into(),
            change,
            subscription: SubscriptionId::parse(SUBSCRIPTION).unwrap(),
            target: Target::Arm {
                id: ArmResourceId::parse(resource).unwrap(),
                kind: ResourceKind::ManagedResourceGroupMember,
            },
            operation: Some("Microsoft.Storage/storageAccounts/delete".into()),
            caller_object_id: caller.map(str::to_owned),
            caller_app_id: None,
            caller_name: None,
            correlation_id: None,
            time: None,
            uses: Vec::new(),
        }
    }

    fn in_managed_group() -> String {
        format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/AZUREML-RG-WS1_0123/providers/Microsoft.Storage/storageAccounts/st1"
        )
    }

    fn verdict(snapshot: &Snapshot, trigger: Option<&Trigger>) -> Vec<crate::rules::Status> {
        let policy = Policy::from_toml_str(
            &format!(
                "[rules.\"managed-resources.tamper\"]\nazure_ml_object_ids = [\"{AZURE_ML}\"]\n"
            ),
            "t",
        )
        .unwrap();
        let context = Context {
            trigger,
            ..context(snapshot, &policy)
        };
        RULE.check(&context).into_iter().map(|c| c.status).collect()
    }

    #[test]
    fn verdicts() {
        let snapshot = compliant_snapshot();
        let member = in_managed_group();
        let group = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{MANAGED_RG}");
        let elsewhere = format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/ml-rg/providers/Microsoft.Storage/storageAccounts/st1"
        );
        let other_subscription = "/subscriptions/99999999-1111-2222-3333-444444444444/resourceGroups/azureml-rg-ws1_0123/providers/Microsoft.Storage/storageAccounts/st1";
        let cases: [(&str, Option<Trigger>, &[crate::rules::Status]); 10] = [
            ("no event", None, &[NA]),
            (
                "delete by a user",
                Some(trigger(&member, ChangeKind::Delete, Some(USER))),
                &[HIGH],
            ),
            (
                "write by a user",
                Some(trigger(&member, ChangeKind::Write, Some(USER))),
                &[HIGH],
            ),
            (
                "delete of the group itself",
                Some(trigger(&group, ChangeKind::Delete, Some(USER))),
                &[HIGH],
            ),
            (
                "caller unknown",
                Some(trigger(&member, ChangeKind::Delete, None)),
                &[HIGH],
            ),
            (
                "write by Azure ML",
                Some(trigger(
                    &member,
                    ChangeKind::Write,
                    Some(&AZURE_ML.to_uppercase()),
                )),
                &[NA],
            ),
            (
                "write by the workspace identity",
                Some(trigger(&member, ChangeKind::Write, Some(PRINCIPAL))),
                &[NA],
            ),
            (
                "action, not a write",
                Some(trigger(&member, ChangeKind::Action, Some(USER))),
                &[NA],
            ),
            (
                "outside the group",
                Some(trigger(&elsewhere, ChangeKind::Delete, Some(USER))),
                &[NA],
            ),
            (
                "same group name, other subscription",
                Some(trigger(other_subscription, ChangeKind::Delete, Some(USER))),
                &[NA],
            ),
        ];
        for (name, trigger, expected) in cases {
            assert_eq!(
                verdict(&snapshot, trigger.as_ref()),
                expected,
                "case: {name}"
            );
        }
    }

    #[test]
    fn absent_inputs() {
        let member = in_managed_group();
        let by_user = trigger(&member, ChangeKind::Delete, Some(USER));
        let mut snapshot = compliant_snapshot();
        workspace_mut(&mut snapshot).service_provisioned_resource_group = None;
        assert_eq!(verdict(&snapshot, Some(&by_user)), [NA]);
        snapshot.workspace = failed_read("workspace", WORKSPACE_ID);
        assert_eq!(verdict(&snapshot, Some(&by_user)), [UNKNOWN]);
    }

    #[test]
    fn the_group_may_be_given_as_an_arm_id() {
        let member = in_managed_group();
        let by_user = trigger(&member, ChangeKind::Delete, Some(USER));
        let mut snapshot = compliant_snapshot();
        workspace_mut(&mut snapshot).service_provisioned_resource_group = Some(format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{MANAGED_RG}"
        ));
        assert_eq!(verdict(&snapshot, Some(&by_user)), [HIGH]);
    }

    #[test]
    fn the_finding_names_the_resource_and_the_caller() {
        let member = in_managed_group();
        let by_user = trigger(&member, ChangeKind::Delete, Some(USER));
        let snapshot = compliant_snapshot();
        let policy = Policy::default();
        let context = Context {
            trigger: Some(&by_user),
            ..context(&snapshot, &policy)
        };
        let check = &RULE.check(&context)[0];
        assert_eq!(check.resource, member);
        assert!(check.observed.contains(USER), "{}", check.observed);
    }

    #[test]
    fn azure_ml_is_recognised_by_its_first_party_app_id_without_configuration() {
        let member = in_managed_group();
        let mut by_azure_ml = trigger(&member, ChangeKind::Write, Some(USER));
        by_azure_ml.caller_app_id = Some(AZURE_ML_APP_ID.to_ascii_uppercase());
        let snapshot = compliant_snapshot();
        assert_eq!(verdict(&snapshot, Some(&by_azure_ml)), [NA]);
        by_azure_ml.caller_app_id = Some("04b07795-8ddb-461a-bbee-02f9e1bf7b46".into());
        assert_eq!(
            verdict(&snapshot, Some(&by_azure_ml)),
            [HIGH],
            "the Azure CLI is a person"
        );
    }
}
