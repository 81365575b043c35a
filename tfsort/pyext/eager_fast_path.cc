// tfsort._eager_fast_path: a CPython extension that runs tfsort's one-output ops eagerly
// (the isotonic family's eager-only ops, SigmoidTopK) and records their backward step on
// the active gradient tapes, in C++.
//
// Why (docs/design_notes.md, "The eager fast path in C++"): at small shapes an eager
// soft_rank forward + backward is almost all TensorFlow's per-call overhead. TF's own
// path for an op (TFE_Py_FastPathExecute) records a mock op and looks the registered
// gradient up on every backward step; the Python direct recording of session 5 removed
// that but kept ~10 us of pybind argument conversion and Python frames per call. Here
// one call builds the op through TF's C API, executes it with the GIL released, wraps
// the output and records a backward object implemented in C++ with
// TFE_Py_TapeSetRecordOperation.
//
// The module links against TensorFlow's Python library (lib_pywrap_tensorflow_common.so,
// which exports the TFE_Py_* and EagerTensor functions used here) and the TF C API, so it
// is tied to the exact TensorFlow it was built against, like the op library.
// tfsort/_utils.py imports it when it can and otherwise uses the Python equivalent
// (_utils.PyEagerOp, without direct recording).
//
// Every path that could do something other than the generic eager path returns None
// (the caller then runs the generated op wrapper, which also raises TF's error
// messages): a non-eager input, op callbacks (tf.debugging.enable_check_numerics), a call
// too big for the kernels' aux stash while recording, or a failed op.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>

#include "tensorflow/c/eager/c_api.h"
#include "tensorflow/python/eager/pywrap_tfe.h"

// From tensorflow/python/eager/pywrap_tensor.h, which is not included because it needs
// NumPy's headers. Exported by lib_pywrap_tensorflow_common.so.
bool EagerTensor_CheckExact(const PyObject* o);
TFE_TensorHandle* EagerTensor_Handle(const PyObject* o);
PyObject* EagerTensorFromHandle(TFE_TensorHandle* handle, const bool is_packed);

namespace {

// Inputs of the ops run here: x or (dy, x), plus the op's extra inputs.
constexpr Py_ssize_t kMaxExtraInputs = 4;

struct EagerOpObject {
  PyObject_HEAD
  std::string* op_type;
  std::string* grad_type;
  int64_t flags;            // attribute `flags` when not recording (< 0: no such attribute)
  int64_t stash_flag;       // or'ed into flags while a tape records
  int64_t grad_flags;       // attribute `flags` of the gradient op (< 0: none)
  int64_t max_stash;        // recording calls above this many elements return None
  PyObject* extra;          // tuple of EagerTensors: inputs after x
  PyObject* grad_extra;     // tuple of EagerTensors: gradient op inputs after (dy, saved)
  PyObject* grad_fallback;  // grad_fallback(dy, saved, *grad_extra[, flags=grad_flags])
  PyObject* record_name;    // str: the op type recorded on the tape
  bool grad_uses_output;    // saved = the op's output (else its input x)
};

struct BackwardObject {
  PyObject_HEAD
  EagerOpObject* op;
  PyObject* saved;  // the gradient op's second input: x or the op's output
  PyObject* ctx;
};

PyTypeObject EagerOpType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject BackwardType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// Test hook (set_trace): a list that receives the op type of every op run here.
PyObject* g_trace = nullptr;

PyObject* g_str_handle = nullptr;        // "_handle"
PyObject* g_str_thread_local = nullptr;  // "_thread_local_data"
PyObject* g_str_device_name = nullptr;   // "device_name"
PyObject* g_str_op_callbacks = nullptr;  // "op_callbacks"
PyObject* g_str_flags = nullptr;         // "flags"

struct StatusDeleter {
  void operator()(TF_Status* s) const { TF_DeleteStatus(s); }
};

TF_Status* ThreadStatus() {
  thread_local std::unique_ptr<TF_Status, StatusDeleter> status(TF_NewStatus());
  return status.get();
}

bool TapesEmpty() {
  PyObject* r = TFE_Py_TapeSetIsEmpty();
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  const bool empty = r == Py_True;
  Py_DECREF(r);
  return empty;
}

// What an op needs from TF's eager context: the TFE_Context and the device scope.
// Holds a reference to the device name string while `device` is in use.
class EagerScope {
 public:
  // False (without a Python error) when the fast path must not run: no initialized
  // context, or op callbacks that only the generic path invokes.
  bool Init(PyObject* ctx) {
    PyObject* handle = PyObject_GetAttr(ctx, g_str_handle);
    if (handle == nullptr) return Fail();
    context_ = PyCapsule_CheckExact(handle)
                   ? static_cast<TFE_Context*>(PyCapsule_GetPointer(handle, nullptr))
                   : nullptr;
    Py_DECREF(handle);  // the context object owns the capsule
    if (context_ == nullptr) return Fail();
    PyObject* tld = PyObject_GetAttr(ctx, g_str_thread_local);
    if (tld == nullptr) return Fail();
    PyObject* callbacks = PyObject_GetAttr(tld, g_str_op_callbacks);
    const bool no_callbacks = callbacks != nullptr && PyList_CheckExact(callbacks) &&
                              PyList_GET_SIZE(callbacks) == 0;
    Py_XDECREF(callbacks);
    if (no_callbacks) device_obj_ = PyObject_GetAttr(tld, g_str_device_name);
    Py_DECREF(tld);
    if (!no_callbacks || device_obj_ == nullptr) return Fail();
    if (PyUnicode_Check(device_obj_)) {
      device_ = PyUnicode_AsUTF8(device_obj_);
      if (device_ == nullptr) return Fail();
    } else if (device_obj_ != Py_None) {
      return Fail();
    }
    return true;
  }
  ~EagerScope() { Py_XDECREF(device_obj_); }

  // Runs op_type(inputs...) with attribute flags; returns its one output as an
  // EagerTensor, or nullptr (no Python error set) if TF reported an error.
  PyObject* Run(const std::string& op_type, TFE_TensorHandle* const* inputs, int num_inputs,
                int64_t flags) const {
    if (g_trace != nullptr) {
      PyObject* name = PyUnicode_FromString(op_type.c_str());
      if (name == nullptr || PyList_Append(g_trace, name) < 0) PyErr_Clear();
      Py_XDECREF(name);
    }
    TF_Status* status = ThreadStatus();
    TFE_Op* op = TFE_NewOp(context_, op_type.c_str(), status);
    if (op == nullptr || TF_GetCode(status) != TF_OK) {
      if (op != nullptr) TFE_DeleteOp(op);
      return nullptr;
    }
    if (device_ != nullptr && device_[0] != '\0') TFE_OpSetDevice(op, device_, status);
    for (int i = 0; i < num_inputs && TF_GetCode(status) == TF_OK; ++i) {
      TFE_OpAddInput(op, inputs[i], status);  // also infers the dtype attribute
    }
    TFE_TensorHandle* output = nullptr;
    int num_outputs = 1;
    if (TF_GetCode(status) == TF_OK) {
      if (flags >= 0) TFE_OpSetAttrInt(op, "flags", flags);
      Py_BEGIN_ALLOW_THREADS;
      TFE_Execute(op, &output, &num_outputs, status);
      Py_END_ALLOW_THREADS;
    }
    TFE_DeleteOp(op);
    if (TF_GetCode(status) != TF_OK || num_outputs != 1 || output == nullptr) return nullptr;
    PyObject* tensor = EagerTensorFromHandle(output, false);  // takes ownership
    if (tensor == nullptr) PyErr_Clear();
    return tensor;
  }

 private:
  bool Fail() {
    PyErr_Clear();
    return false;
  }

  TFE_Context* context_ = nullptr;
  PyObject* device_obj_ = nullptr;
  const char* device_ = nullptr;
};

// Fills inputs[first...] with the handles of the tensors in `extra` (a tuple); returns
// the count written.
int AddExtraInputs(PyObject* extra, TFE_TensorHandle** inputs, int first) {
  const Py_ssize_t n = PyTuple_GET_SIZE(extra);
  for (Py_ssize_t i = 0; i < n; ++i) {
    inputs[first + i] = EagerTensor_Handle(PyTuple_GET_ITEM(extra, i));
  }
  return first + static_cast<int>(n);
}

// ---------------------------------------------------------------------------------------
// The backward step recorded on the tape: called with the output's cotangent, returns
// [gradient for x]. Eagerly, and with no tape recording the backward pass itself, it runs
// the gradient op here; otherwise (graph tensors inside tape.jacobian's pfor, nested tapes
// that differentiate the gradient, forward accumulators transposing it) it calls
// grad_fallback, the generated op wrapper, which records the gradient op with its
// registered gradient.

PyObject* Backward_call(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<BackwardObject*>(self_obj);
  const EagerOpObject* op = self->op;
  if (PyTuple_GET_SIZE(args) != 1 || (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0)) {
    PyErr_SetString(PyExc_TypeError, "tfsort backward step takes one cotangent");
    return nullptr;
  }
  PyObject* dy = PyTuple_GET_ITEM(args, 0);
  PyObject* grad = nullptr;
  if (EagerTensor_CheckExact(dy) && TapesEmpty()) {
    EagerScope scope;
    if (scope.Init(self->ctx)) {
      TFE_TensorHandle* inputs[2 + kMaxExtraInputs];
      inputs[0] = EagerTensor_Handle(dy);
      inputs[1] = EagerTensor_Handle(self->saved);
      const int n = AddExtraInputs(op->grad_extra, inputs, 2);
      grad = scope.Run(*op->grad_type, inputs, n, op->grad_flags);
    }
  }
  if (grad == nullptr) {
    const Py_ssize_t num_extra = PyTuple_GET_SIZE(op->grad_extra);
    PyObject* call_args = PyTuple_New(2 + num_extra);
    if (call_args == nullptr) return nullptr;
    Py_INCREF(dy);
    PyTuple_SET_ITEM(call_args, 0, dy);
    Py_INCREF(self->saved);
    PyTuple_SET_ITEM(call_args, 1, self->saved);
    for (Py_ssize_t i = 0; i < num_extra; ++i) {
      PyObject* e = PyTuple_GET_ITEM(op->grad_extra, i);
      Py_INCREF(e);
      PyTuple_SET_ITEM(call_args, 2 + i, e);
    }
    if (op->grad_flags < 0) {
      grad = PyObject_Call(op->grad_fallback, call_args, nullptr);
    } else {
      PyObject* call_kwargs = PyDict_New();
      PyObject* flags = PyLong_FromLongLong(op->grad_flags);
      if (call_kwargs != nullptr && flags != nullptr &&
          PyDict_SetItem(call_kwargs, g_str_flags, flags) == 0) {
        grad = PyObject_Call(op->grad_fallback, call_args, call_kwargs);
      }
      Py_XDECREF(flags);
      Py_XDECREF(call_kwargs);
    }
    Py_DECREF(call_args);
    if (grad == nullptr) return nullptr;
  }
  PyObject* result = PyList_New(1);
  if (result == nullptr) {
    Py_DECREF(grad);
    return nullptr;
  }
  PyList_SET_ITEM(result, 0, grad);
  return result;
}

void Backward_dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<BackwardObject*>(self_obj);
  Py_XDECREF(reinterpret_cast<PyObject*>(self->op));
  Py_XDECREF(self->saved);
  Py_XDECREF(self->ctx);
  PyObject_Free(self_obj);
}

// ---------------------------------------------------------------------------------------
// EagerOp(op_type, flags, stash_flag, extra, grad_type, grad_flags, grad_fallback,
//         max_stash_elements, grad_extra=extra, grad_uses_output=False)

// Checks that `value` is a tuple of at most kMaxExtraInputs eager tensors.
bool CheckExtra(PyObject* value, const char* name) {
  if (!PyTuple_CheckExact(value)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a tuple of eager tensors", name);
    return false;
  }
  if (PyTuple_GET_SIZE(value) > kMaxExtraInputs) {
    PyErr_Format(PyExc_ValueError, "%s: at most %d inputs", name,
                 static_cast<int>(kMaxExtraInputs));
    return false;
  }
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); ++i) {
    if (!EagerTensor_CheckExact(PyTuple_GET_ITEM(value, i))) {
      PyErr_Format(PyExc_TypeError, "%s: expected eager tensors", name);
      return false;
    }
  }
  return true;
}

int EagerOp_init(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<EagerOpObject*>(self_obj);
  if (self->op_type != nullptr) {
    PyErr_SetString(PyExc_TypeError, "EagerOp is immutable");
    return -1;
  }
  const char* op_type;
  const char* grad_type;
  long long flags, stash_flag, grad_flags, max_stash;
  PyObject *extra, *grad_fallback, *grad_extra = nullptr;
  int grad_uses_output = 0;
  static const char* kwlist[] = {"op_type",       "flags",
                                 "stash_flag",    "extra",
                                 "grad_type",     "grad_flags",
                                 "grad_fallback", "max_stash_elements",
                                 "grad_extra",    "grad_uses_output",
                                 nullptr};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sLLOsLOL|Op", const_cast<char**>(kwlist),
                                   &op_type, &flags, &stash_flag, &extra, &grad_type,
                                   &grad_flags, &grad_fallback, &max_stash, &grad_extra,
                                   &grad_uses_output)) {
    return -1;
  }
  if (grad_extra == nullptr || grad_extra == Py_None) grad_extra = extra;
  if (!CheckExtra(extra, "extra") || !CheckExtra(grad_extra, "grad_extra")) return -1;
  if (!PyCallable_Check(grad_fallback)) {
    PyErr_SetString(PyExc_TypeError, "grad_fallback: expected a callable");
    return -1;
  }
  self->record_name = PyUnicode_FromString(op_type);
  if (self->record_name == nullptr) return -1;
  self->op_type = new std::string(op_type);
  self->grad_type = new std::string(grad_type);
  self->flags = flags;
  self->stash_flag = stash_flag;
  self->grad_flags = grad_flags;
  self->max_stash = max_stash;
  self->grad_uses_output = grad_uses_output != 0;
  Py_INCREF(extra);
  self->extra = extra;
  Py_INCREF(grad_extra);
  self->grad_extra = grad_extra;
  Py_INCREF(grad_fallback);
  self->grad_fallback = grad_fallback;
  return 0;
}

void EagerOp_dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<EagerOpObject*>(self_obj);
  delete self->op_type;
  delete self->grad_type;
  Py_XDECREF(self->extra);
  Py_XDECREF(self->grad_extra);
  Py_XDECREF(self->grad_fallback);
  Py_XDECREF(self->record_name);
  Py_TYPE(self_obj)->tp_free(self_obj);
}

// op(ctx, x): op_type(x, *extra) as an EagerTensor, recorded with its backward step when
// a tape or forward accumulator records; None where the caller must take the generic
// path. ctx is TF's eager context (tfsort._utils.eager_context()).
PyObject* EagerOp_call(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<EagerOpObject*>(self_obj);
  if (self->op_type == nullptr) {
    PyErr_SetString(PyExc_TypeError, "EagerOp was not initialized");
    return nullptr;
  }
  if (PyTuple_GET_SIZE(args) != 2 || (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0)) {
    PyErr_SetString(PyExc_TypeError, "EagerOp takes (ctx, x)");
    return nullptr;
  }
  PyObject* ctx = PyTuple_GET_ITEM(args, 0);
  PyObject* x = PyTuple_GET_ITEM(args, 1);
  if (!EagerTensor_CheckExact(x)) Py_RETURN_NONE;
  TFE_TensorHandle* inputs[1 + kMaxExtraInputs];
  inputs[0] = EagerTensor_Handle(x);
  if (inputs[0] == nullptr) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  const bool recording = !TapesEmpty();
  if (recording) {
    const int64_t n = TFE_TensorHandleNumElements(inputs[0], ThreadStatus());
    if (TF_GetCode(ThreadStatus()) != TF_OK || n > self->max_stash) Py_RETURN_NONE;
  }
  EagerScope scope;
  if (!scope.Init(ctx)) Py_RETURN_NONE;
  const int num_inputs = AddExtraInputs(self->extra, inputs, 1);
  const int64_t flags =
      recording && self->flags >= 0 ? self->flags | self->stash_flag : self->flags;
  PyObject* out = scope.Run(*self->op_type, inputs, num_inputs, flags);
  if (out == nullptr) Py_RETURN_NONE;
  if (!recording) return out;

  auto* backward = PyObject_New(BackwardObject, &BackwardType);
  if (backward != nullptr) {
    Py_INCREF(self_obj);
    backward->op = self;
    backward->saved = self->grad_uses_output ? out : x;
    Py_INCREF(backward->saved);
    Py_INCREF(ctx);
    backward->ctx = ctx;
  }
  PyObject* outputs = PyList_New(1);
  PyObject* sources = PyList_New(1);
  PyObject* recorded = nullptr;
  if (backward != nullptr && outputs != nullptr && sources != nullptr) {
    Py_INCREF(out);
    PyList_SET_ITEM(outputs, 0, out);
    Py_INCREF(x);
    PyList_SET_ITEM(sources, 0, x);
    // No forward function: forward accumulators transpose the backward step (it is linear
    // in dy and its gradient op has a registered gradient), as for tf.custom_gradient.
    recorded = TFE_Py_TapeSetRecordOperation(self->record_name, outputs, sources,
                                             reinterpret_cast<PyObject*>(backward), Py_None);
  }
  Py_XDECREF(reinterpret_cast<PyObject*>(backward));
  Py_XDECREF(outputs);
  Py_XDECREF(sources);
  if (recorded == nullptr) {
    Py_DECREF(out);
    return nullptr;
  }
  Py_DECREF(recorded);
  return out;
}

PyObject* SetTrace(PyObject*, PyObject* arg) {
  if (arg != Py_None && !PyList_CheckExact(arg)) {
    PyErr_SetString(PyExc_TypeError, "set_trace: expected a list or None");
    return nullptr;
  }
  PyObject* old = g_trace;
  g_trace = arg == Py_None ? nullptr : arg;
  Py_XINCREF(g_trace);
  Py_XDECREF(old);
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"set_trace", SetTrace, METH_O,
     "set_trace(list or None): append the op type of every op run here to the list "
     "(for tests)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT, "_eager_fast_path",
    "Eager fast path of tfsort's eager-only ops (see tfsort/pyext/eager_fast_path.cc).", -1,
    kMethods,
};

}  // namespace

PyMODINIT_FUNC PyInit__eager_fast_path() {
  EagerOpType.tp_name = "tfsort._eager_fast_path.EagerOp";
  EagerOpType.tp_basicsize = sizeof(EagerOpObject);
  EagerOpType.tp_flags = Py_TPFLAGS_DEFAULT;
  EagerOpType.tp_doc =
      "EagerOp(op_type, flags, stash_flag, extra, grad_type, grad_flags, grad_fallback, "
      "max_stash_elements, grad_extra=extra, grad_uses_output=False): op(ctx, x) runs "
      "op_type(x, *extra) eagerly and records its backward step grad_type(dy, saved, "
      "*grad_extra), saved = x or the output; flags < 0: the op has no `flags` attribute. "
      "None where the generic path must run.";
  EagerOpType.tp_new = PyType_GenericNew;
  EagerOpType.tp_init = EagerOp_init;
  EagerOpType.tp_call = EagerOp_call;
  EagerOpType.tp_dealloc = EagerOp_dealloc;
  BackwardType.tp_name = "tfsort._eager_fast_path.Backward";
  BackwardType.tp_basicsize = sizeof(BackwardObject);
  BackwardType.tp_flags = Py_TPFLAGS_DEFAULT;
  BackwardType.tp_call = Backward_call;
  BackwardType.tp_dealloc = Backward_dealloc;
  if (PyType_Ready(&EagerOpType) < 0 || PyType_Ready(&BackwardType) < 0) return nullptr;
  g_str_handle = PyUnicode_InternFromString("_handle");
  g_str_thread_local = PyUnicode_InternFromString("_thread_local_data");
  g_str_device_name = PyUnicode_InternFromString("device_name");
  g_str_op_callbacks = PyUnicode_InternFromString("op_callbacks");
  g_str_flags = PyUnicode_InternFromString("flags");
  if (!g_str_handle || !g_str_thread_local || !g_str_device_name || !g_str_op_callbacks ||
      !g_str_flags) {
    return nullptr;
  }
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr) return nullptr;
  Py_INCREF(&EagerOpType);
  if (PyModule_AddObject(module, "EagerOp", reinterpret_cast<PyObject*>(&EagerOpType)) < 0) {
    Py_DECREF(&EagerOpType);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
