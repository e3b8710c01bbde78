// The event subscriptions of one subscription system topic to OnSubscriptionEvent.
//
// Two subscriptions, because intake treats two different things as relevant
// (handler/src/intake/classify.rs): the operations in RELEVANT_OPERATIONS, and any write or
// delete inside a service-provisioned resource group (azureml-rg-…). Event Grid ANDs the
// filters of one subscription and allows at most 25 advanced-filter values in total; the
// operation list already uses all 25, and a second filter would narrow it rather than widen it.
// The managed groups therefore get their own subscription, filtered by subject prefix (the
// subject is the resource id), which costs no advanced-filter value. An event that matches both
// (a write of the managed group itself) is delivered twice; cmk-guard answers the second
// `duplicate` by event id.
//
// A workspace may name its service-provisioned group without the prefix
// (`serviceProvisionedResourceGroup`); cmk-guard logs those names at each sweep (`Service-
// provisioned resource groups watched.`, field `without_prefix`). Each name given in
// `managedResourceGroups` gets one more subscription (`subjectBeginsWith` takes one value),
// filtered on the subject `…/resourceGroups/<name>/`: everything inside the group and nothing
// in a group whose name merely begins with it. The group's own write and delete
// (`…/resourceGroups/<name>`, no slash) are in RELEVANT_OPERATIONS and reach cmk-guard through
// `cmk-guard-operations`.

@description('Name of the system topic in this resource group.')
param topicName string

@description('Resource id of the OnSubscriptionEvent function.')
param functionId string

@description('Retry and dead-letter settings: {maxDeliveryAttempts, eventTimeToLiveInMinutes, deadLetterStorageId, deadLetterContainer}.')
param delivery object

@description('Names of service-provisioned resource groups without the azureml-rg- prefix (ARM resource-group names: 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a period; infra/hooks/postdeploy.sh checks them). Default: none.')
param managedResourceGroups array = []

// Exactly RELEVANT_OPERATIONS (handler/tests/integration/infra.rs checks it), matched
// case-insensitively.
var relevantOperations = [
  'Microsoft.KeyVault/vaults/write'
  'Microsoft.KeyVault/vaults/delete'
  'Microsoft.KeyVault/vaults/accessPolicies/write'
  'Microsoft.KeyVault/vaults/keys/write'
  'Microsoft.KeyVault/locations/deletedVaults/purge/action'
  'Microsoft.MachineLearningServices/workspaces/write'
  'Microsoft.MachineLearningServices/workspaces/delete'
  'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write'
  'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/delete'
  'Microsoft.MachineLearningServices/workspaces/batchEndpoints/write'
  'Microsoft.MachineLearningServices/workspaces/batchEndpoints/delete'
  'Microsoft.Authorization/roleAssignments/write'
  'Microsoft.Authorization/roleAssignments/delete'
  'Microsoft.Resources/subscriptions/resourceGroups/write'
  'Microsoft.Resources/subscriptions/resourceGroups/delete'
  'Microsoft.MachineLearningServices/register/action'
  'Microsoft.MachineLearningServices/unregister/action'
  'Microsoft.Storage/register/action'
  'Microsoft.Storage/unregister/action'
  'Microsoft.KeyVault/register/action'
  'Microsoft.KeyVault/unregister/action'
  'Microsoft.DocumentDB/register/action'
  'Microsoft.DocumentDB/unregister/action'
  'Microsoft.Search/register/action'
  'Microsoft.Search/unregister/action'
]

// MANAGED_RESOURCE_GROUP_PREFIX in classify.rs (handler/tests/integration/infra.rs checks it).
var managedResourceGroupPrefix = 'azureml-rg-'

// Resource-group names are case-insensitive: one subscription per name, whatever its casing
// (union drops the repeats).
var managedResourceGroupNames = [for group in managedResourceGroups: toLower(trim(group))]
var namedResourceGroups = union(managedResourceGroupNames, [])

var destination = {
  endpointType: 'AzureFunction'
  properties: {
    resourceId: functionId
    // One event per delivery: a failed invocation then makes Event Grid redeliver that event only.
    maxEventsPerBatch: 1
    preferredBatchSizeInKilobytes: 64
  }
}

var retryPolicy = {
  maxDeliveryAttempts: delivery.maxDeliveryAttempts
  eventTimeToLiveInMinutes: delivery.eventTimeToLiveInMinutes
}

// The storage account allows no shared keys, so the topic's own identity writes dead letters.
var deadLetter = {
  identity: {
    type: 'SystemAssigned'
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: delivery.deadLetterStorageId
      blobContainerName: delivery.deadLetterContainer
    }
  }
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

resource operations 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'cmk-guard-operations'
  properties: {
    destination: destination
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: relevantOperations
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

resource managedResourceGroups 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'cmk-guard-managed-resource-groups'
  properties: {
    destination: destination
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      // Intake ignores actions inside the managed groups; writes and deletes are what matter.
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
      ]
      subjectBeginsWith: '${subscription().id}/resourceGroups/${managedResourceGroupPrefix}'
      isSubjectCaseSensitive: false
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

// A name with the prefix is already covered above; one left in the list would only deliver
// every event twice. The event subscription's name allows letters, digits and hyphens only,
// which a resource-group name need not be: hence a hash of the name.
resource namedManagedResourceGroups 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [for group in namedResourceGroups: if (!empty(group) && !startsWith(group, managedResourceGroupPrefix)) {
  parent: topic
  name: 'cmk-guard-mrg-${uniqueString(group)}'
  properties: {
    destination: destination
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
      ]
      subjectBeginsWith: '${subscription().id}/resourceGroups/${group}/'
      isSubjectCaseSensitive: false
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}]
