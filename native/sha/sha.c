// Resumable SHA-256 / SHA-512 at OpenSSL speed (SHA-NI where the CPU has it). Node's crypto
// cannot save a hash's state between requests; these functions keep the OpenSSL context in a
// Buffer owned by JavaScript, so saving the state is copying that Buffer.
//
//   init(alg)              -> Buffer (the context)
//   update(alg, ctx, data) -> undefined
//   final(alg, ctx)        -> Buffer (the digest); ctx must not be used afterwards
//   contextSize(alg)       -> number (to check a saved state belongs to this build)
//   updateAsync(alg, ctx, chunks) -> Promise<undefined>: update with each chunk in order, on a
//                            libuv thread-pool thread, so that a large upload's hashing runs
//                            beside the event loop's socket and storage work instead of on it.
//                            The caller must leave ctx and the chunks untouched until it settles.
//
// alg: 256 or 512. Built by scripts/setup.sh with gcc against the system libcrypto.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <node_api.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

static napi_value throw_error(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int get_alg(napi_env env, napi_value v, int *alg) {
  int32_t a;
  if (napi_get_value_int32(env, v, &a) != napi_ok || (a != 256 && a != 512)) return 0;
  *alg = a;
  return 1;
}

static size_t ctx_size(int alg) { return alg == 256 ? sizeof(SHA256_CTX) : sizeof(SHA512_CTX); }

static int get_ctx(napi_env env, napi_value v, int alg, void **ctx) {
  size_t len;
  if (napi_get_buffer_info(env, v, ctx, &len) != napi_ok || len != ctx_size(alg)) return 0;
  return 1;
}

static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int alg;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_alg(env, argv[0], &alg)) return throw_error(env, "init(alg): alg must be 256 or 512");
  void *data;
  napi_value buf;
  if (napi_create_buffer(env, ctx_size(alg), &data, &buf) != napi_ok) return throw_error(env, "out of memory");
  memset(data, 0, ctx_size(alg));
  if (alg == 256) SHA256_Init((SHA256_CTX *)data); else SHA512_Init((SHA512_CTX *)data);
  return buf;
}

static napi_value js_update(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int alg;
  void *ctx, *data;
  size_t len;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || !get_alg(env, argv[0], &alg)) return throw_error(env, "update(alg, ctx, data)");
  if (!get_ctx(env, argv[1], alg, &ctx)) return throw_error(env, "update: bad context");
  bool is_typed;
  napi_is_typedarray(env, argv[2], &is_typed);
  if (!is_typed) return throw_error(env, "update: data must be a Buffer or Uint8Array");
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  napi_get_typedarray_info(env, argv[2], &type, &len, &data, &ab, &offset);
  if (alg == 256) SHA256_Update((SHA256_CTX *)ctx, data, len); else SHA512_Update((SHA512_CTX *)ctx, data, len);
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref ctx_ref, chunks_ref; /* keep the context and the chunks alive while the job runs */
  int alg;
  void *ctx;
  uint32_t n;
  void **data;
  size_t *len;
} update_job;

static void update_execute(napi_env env, void *p) {
  (void)env;
  update_job *job = p;
  for (uint32_t i = 0; i < job->n; i++) {
    if (job->alg == 256) SHA256_Update((SHA256_CTX *)job->ctx, job->data[i], job->len[i]);
    else SHA512_Update((SHA512_CTX *)job->ctx, job->data[i], job->len[i]);
  }
}

static void update_free(napi_env env, update_job *job) {
  if (job->ctx_ref) napi_delete_reference(env, job->ctx_ref);
  if (job->chunks_ref) napi_delete_reference(env, job->chunks_ref);
  if (job->work) napi_delete_async_work(env, job->work);
  free(job->data);
  free(job->len);
  free(job);
}

static void update_complete(napi_env env, napi_status status, void *p) {
  update_job *job = p;
  napi_value undef;
  napi_get_undefined(env, &undef);
  if (status == napi_ok) napi_resolve_deferred(env, job->deferred, undef);
  else {
    napi_value msg, err;
    napi_create_string_utf8(env, "updateAsync: the hashing job did not run", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, job->deferred, err);
  }
  update_free(env, job);
}

static napi_value js_update_async(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int alg;
  void *ctx;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || !get_alg(env, argv[0], &alg)) return throw_error(env, "updateAsync(alg, ctx, chunks)");
  if (!get_ctx(env, argv[1], alg, &ctx)) return throw_error(env, "updateAsync: bad context");
  bool is_array;
  napi_is_array(env, argv[2], &is_array);
  if (!is_array) return throw_error(env, "updateAsync: chunks must be an array");
  uint32_t n;
  napi_get_array_length(env, argv[2], &n);
  update_job *job = calloc(1, sizeof *job);
  if (!job) return throw_error(env, "out of memory");
  job->alg = alg;
  job->ctx = ctx;
  job->n = n;
  job->data = calloc(n ? n : 1, sizeof *job->data);
  job->len = calloc(n ? n : 1, sizeof *job->len);
  if (!job->data || !job->len) {
    update_free(env, job);
    return throw_error(env, "out of memory");
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value el, ab;
    bool is_typed;
    napi_typedarray_type type;
    size_t offset;
    napi_get_element(env, argv[2], i, &el);
    napi_is_typedarray(env, el, &is_typed);
    if (!is_typed) {
      update_free(env, job);
      return throw_error(env, "updateAsync: every chunk must be a Buffer or Uint8Array");
    }
    /* data already points at the view's first byte (byte_offset applied). */
    napi_get_typedarray_info(env, el, &type, &job->len[i], &job->data[i], &ab, &offset);
    if (type != napi_uint8_array) {
      update_free(env, job);
      return throw_error(env, "updateAsync: every chunk must be a Buffer or Uint8Array");
    }
  }
  napi_value promise, name;
  napi_create_reference(env, argv[1], 1, &job->ctx_ref);
  napi_create_reference(env, argv[2], 1, &job->chunks_ref);
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "sha.updateAsync", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, update_execute, update_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    /* The promise is dropped unsettled; the caller gets the exception. */
    update_free(env, job);
    return throw_error(env, "updateAsync: could not queue the job");
  }
  return promise;
}

static napi_value js_final(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int alg;
  void *ctx;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || !get_alg(env, argv[0], &alg)) return throw_error(env, "final(alg, ctx)");
  if (!get_ctx(env, argv[1], alg, &ctx)) return throw_error(env, "final: bad context");
  void *out;
  napi_value buf;
  size_t n = alg == 256 ? SHA256_DIGEST_LENGTH : SHA512_DIGEST_LENGTH;
  napi_create_buffer(env, n, &out, &buf);
  if (alg == 256) SHA256_Final(out, (SHA256_CTX *)ctx); else SHA512_Final(out, (SHA512_CTX *)ctx);
  return buf;
}

static napi_value js_context_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int alg;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_alg(env, argv[0], &alg)) return throw_error(env, "contextSize(alg)");
  napi_create_uint32(env, (uint32_t)ctx_size(alg), &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "init", NAPI_AUTO_LENGTH, js_init, NULL, &fn);
  napi_set_named_property(env, exports, "init", fn);
  napi_create_function(env, "update", NAPI_AUTO_LENGTH, js_update, NULL, &fn);
  napi_set_named_property(env, exports, "update", fn);
  napi_create_function(env, "updateAsync", NAPI_AUTO_LENGTH, js_update_async, NULL, &fn);
  napi_set_named_property(env, exports, "updateAsync", fn);
  napi_create_function(env, "final", NAPI_AUTO_LENGTH, js_final, NULL, &fn);
  napi_set_named_property(env, exports, "final", fn);
  napi_create_function(env, "contextSize", NAPI_AUTO_LENGTH, js_context_size, NULL, &fn);
  napi_set_named_property(env, exports, "contextSize", fn);
  return exports;
}
