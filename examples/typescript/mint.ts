import { Client, Connection, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { WorkflowIdConflictPolicy, WorkflowIdReusePolicy } from '@temporalio/common';

interface MintResult { status: string; mint_address: string | null; reason: string | null }

const connection = await Connection.connect({
  address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
});
const client = new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' });

// The JSON of a MintRequest (schemas/mint_request.schema.json)
const request = {
  mint_id: 'order-1043', user_id: 'user-7', wallet: '4QFmamgt5yUKJ45u3UDY1923re5qRsMeCxHPCr1oax17',
  name: 'Saga #1043', symbol: 'SAGA', image: { path: 'sample.png' },
};
const workflowId = `mint-${request.mint_id}`; // one workflow per mint_id, as in Python
let handle;
try {
  handle = await client.workflow.start('MintSaga', {
    taskQueue: process.env.TEMPORAL_TASK_QUEUE ?? 'mint-saga',
    workflowId,
    args: [request],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING, // running: join it
    workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE, // finished: never run again
  });
} catch (err) {
  if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  handle = client.workflow.getHandle(workflowId); // it finished before: that is this mint
}
const result: MintResult = await handle.result(); // waits: MINTED, or ROLLED_BACK with a reason
console.log(result.status, result.mint_address ?? result.reason);
await connection.close();
