// cmk-guard's Event Grid event subscriptions on the watched subscriptions' system topics,
// deployed after the code (azure.yaml postdeploy hook, infra/hooks/postdeploy.sh): an
// AzureFunction destination is validated against the function, which exists only once the
// package is deployed. The system topics themselves and their dead-letter rights come from
// main.bicep; its outputs are this file's parameters. Key Vault event subscriptions are not
// here: cmk-guard's sweep creates them (self-wiring, CMKGUARD_KEYVAULT_EVENTS_TARGET).
targetScope = 'subscription'

@description('Resource id of the function app (main.bicep output CMK_GUARD_FUNCTION_APP_ID).')
param functionAppId string

@description('Resource id of the storage account with the dead-letter container.')
param deadLetterStorageId string

@description('Name of the dead-letter container.')
param deadLetterContainer string

@description('Subscription system topics: [{subscriptionId, resourceGroup, name}].')
param subscriptionTopics array

@description('Service-provisioned resource groups without the azureml-rg- prefix, by name (main.bicep output CMK_GUARD_MANAGED_RESOURCE_GROUPS): one more event subscription each on every subscription topic.')
param managedResourceGroups array = []

@minValue(1)
@maxValue(30)
@description('Delivery attempts before an event is dead-lettered.')
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
@description('Minutes an event is retried before it is dead-lettered.')
param eventTimeToLiveInMinutes int = 1440

var delivery = {
  maxDeliveryAttempts: maxDeliveryAttempts
  eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  deadLetterStorageId: deadLetterStorageId
  deadLetterContainer: deadLetterContainer
}

module subscriptionEvents 'modules/subscription-events.bicep' = [for (t, i) in subscriptionTopics: {
  name: take('cmkguard-events-subscription-${i}-${uniqueString(functionAppId)}', 64)
  scope: resourceGroup(t.subscriptionId, t.resourceGroup)
  params: {
    topicName: t.name
    functionId: '${functionAppId}/functions/OnSubscriptionEvent'
    delivery: delivery
    managedResourceGroups: managedResourceGroups
  }
}]
