// The mirror and notification endpoints' helpers are the management API's own (api/v1/common.ts).
export { adminRepository, ApiError, caller as authenticate, handle, jsonBody, problem, type ErrorType } from './common.ts';
