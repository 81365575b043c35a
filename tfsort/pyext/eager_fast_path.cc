// tfsort._eager_fast_path: a CPython extension that runs tfsort's ops eagerly (the isotonic
// family's eager-only ops, SigmoidTopK, SortingNetwork) and records their backward step on
// the active gradient tapes, in C++.
//
// Why (docs/design_notes.md, "The eager fast path in C++"): at small shapes an eager
// soft_rank forward + backward is almost all TensorFlow's per-call overhead. TF's own
// path for an op (TFE_Py_FastPathExecute) records a mock op and looks the registered
// gradient up on every backward step; the Python direct recording of session 5 removed
// that but kept ~10 us of pybind argument conversion and Python frames per call. Here
// one call builds the op through TF's C API, executes it with the GIL released, wraps
// the outputs and records a backward object implemented in C++ with
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
// messages): a non-eager input, asynchronous execution, op callbacks
// (tf.debugging.enable_check_numerics), a call too big for the kernels' aux stash while
// recording, or a failed op.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensorflow/c/eager/c_api.h"
#include "tensorflow/c/eager/c_api_experimental.h"
#include "tensorflow/python/eager/pywrap_tfe.h"

// From tensorflow/python/eager/pywrap_tensor.h, which is not included because it needs
// NumPy's headers. Exported by lib_pywrap_tensorflow_common.so.
bool EagerTensor_CheckExact(const PyObject* o);
TFE_TensorHandle* EagerTensor_Handle(const PyObject* o);
PyObject* EagerTensorFromHandle(TFE_TensorHandle* handle, const bool is_packed);

namespace {

constexpr int kMaxInputs = 8;   // of any op run here
constexpr int kMaxOutputs = 4;  // of a forward op
// grad_inputs entries: kFromX for x, 0 <= i < kFromCotangent for output i, and
// kFromCotangent + i for the cotangent of output i.
constexpr long kFromX = -1;
constexpr long kFromCotangent = 100;

// One attribute of an op, converted once from a Python value.
struct Attr {
  std::string name;
  enum Kind { kBool, kInt, kString, kType } kind;
  int64_t value;      // kBool, kInt, kType (a TF_DataType)
  std::string text;   // kString
};
using Attrs = std::vector<Attr>;

struct EagerOpObject {
  PyObject_HEAD
  std::string* op_type;
  std::string* grad_type;
  Attrs* attrs;            // of the forward op when no tape records
  Attrs* recording_attrs;  // of the forward op while a tape records
  Attrs* grad_attrs;       // of the gradient op (T and Tacc-like attributes are inferred)
  int64_t max_stash;       // recording calls above this many elements return None
  int num_outputs;         // of the forward op; all are recorded, the first is returned
  bool keeps_outputs;      // whether grad_inputs reads forward outputs
  PyObject* extra;         // tuple of EagerTensors: forward inputs after x
  PyObject* grad_inputs;   // tuple: ints (see kFromX) or EagerTensors
  PyObject* grad_kwargs;   // dict: grad_attrs as Python values, for grad_fallback
  PyObject* grad_fallback; // the gradient op's generated wrapper
  PyObject* record_name;   // str: the op type recorded on the tape
};

struct BackwardObject {
  PyObject_HEAD
  EagerOpObject* op;
  PyObject* x;
  PyObject* outputs;  // tuple of the forward outputs, or nullptr if grad_inputs needs none
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
PyObject* g_str_type_enum = nullptr;     // "as_datatype_enum"

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

// Converts {name: value} (bool, int, str, or a tf.DType) to attrs; false with a Python
// error for anything else.
bool ParseAttrs(PyObject* dict, Attrs* attrs, const char* arg) {
  if (!PyDict_CheckExact(dict)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a dict of attributes", arg);
    return false;
  }
  PyObject *key, *value;
  Py_ssize_t pos = 0;
  while (PyDict_Next(dict, &pos, &key, &value)) {
    Attr a;
    const char* name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : nullptr;
    if (name == nullptr) {
      PyErr_Clear();
      PyErr_Format(PyExc_TypeError, "%s: attribute names must be strings", arg);
      return false;
    }
    a.name = name;
    if (PyBool_Check(value)) {
      a.kind = Attr::kBool;
      a.value = value == Py_True;
    } else if (PyLong_CheckExact(value)) {
      a.kind = Attr::kInt;
      a.value = PyLong_AsLongLong(value);
      if (a.value == -1 && PyErr_Occurred()) return false;
    } else if (PyUnicode_Check(value)) {
      const char* text = PyUnicode_AsUTF8(value);
      if (text == nullptr) return false;
      a.kind = Attr::kString;
      a.text = text;
    } else {
      PyObject* type_enum = PyObject_GetAttr(value, g_str_type_enum);  // a tf.DType
      if (type_enum == nullptr || !PyLong_Check(type_enum)) {
        Py_XDECREF(type_enum);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: attribute %s must be a bool, int, str or DType",
                     arg, name);
        return false;
      }
      a.kind = Attr::kType;
      a.value = PyLong_AsLongLong(type_enum);
      Py_DECREF(type_enum);
    }
    attrs->push_back(std::move(a));
  }
  return true;
}

// What an op needs from TF's eager context: the TFE_Context and the device scope.
// Holds a reference to the device name string while `device` is in use.
class EagerScope {
 public:
  // False (without a Python error) when the fast path must not run: no initialized
  // context, asynchronous execution (kernel errors would surface later, in place of the
  // generic path's argument checks at the call), or op callbacks that only the generic
  // path invokes.
  bool Init(PyObject* ctx) {
    PyObject* handle = PyObject_GetAttr(ctx, g_str_handle);
    if (handle == nullptr) return Fail();
    context_ = PyCapsule_CheckExact(handle)
                   ? static_cast<TFE_Context*>(PyCapsule_GetPointer(handle, nullptr))
                   : nullptr;
    Py_DECREF(handle);  // the context object owns the capsule
    if (context_ == nullptr) return Fail();
    TFE_Executor* executor = TFE_ContextGetExecutorForThread(context_);  // a view
    const bool async = TFE_ExecutorIsAsync(executor);
    TFE_DeleteExecutor(executor);
    if (async) return Fail();
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

  // Runs op_type(inputs...) with attrs; stores its num_outputs outputs as new EagerTensor
  // references in outputs[]. False (no Python error set, nothing stored) if TF reported
  // an error.
  bool Run(const std::string& op_type, TFE_TensorHandle* const* inputs, int num_inputs,
           const Attrs& attrs, int num_outputs, PyObject** outputs) const {
    if (g_trace != nullptr) {
      PyObject* name = PyUnicode_FromString(op_type.c_str());
      if (name == nullptr || PyList_Append(g_trace, name) < 0) PyErr_Clear();
      Py_XDECREF(name);
    }
    TF_Status* status = ThreadStatus();
    TFE_Op* op = TFE_NewOp(context_, op_type.c_str(), status);
    if (op == nullptr || TF_GetCode(status) != TF_OK) {
      if (op != nullptr) TFE_DeleteOp(op);
      return false;
    }
    if (device_ != nullptr && device_[0] != '\0') TFE_OpSetDevice(op, device_, status);
    for (int i = 0; i < num_inputs && TF_GetCode(status) == TF_OK; ++i) {
      TFE_OpAddInput(op, inputs[i], status);  // also infers the attributes of input types
    }
    TFE_TensorHandle* handles[kMaxOutputs] = {};
    int got = num_outputs;
    if (TF_GetCode(status) == TF_OK) {
      for (const Attr& a : attrs) {
        switch (a.kind) {
          case Attr::kBool:
            TFE_OpSetAttrBool(op, a.name.c_str(), static_cast<unsigned char>(a.value));
            break;
          case Attr::kInt:
            TFE_OpSetAttrInt(op, a.name.c_str(), a.value);
            break;
          case Attr::kString:
            TFE_OpSetAttrString(op, a.name.c_str(), a.text.data(), a.text.size());
            break;
          case Attr::kType:
            TFE_OpSetAttrType(op, a.name.c_str(), static_cast<TF_DataType>(a.value));
            break;
        }
      }
      Py_BEGIN_ALLOW_THREADS;
      TFE_Execute(op, handles, &got, status);
      Py_END_ALLOW_THREADS;
    }
    TFE_DeleteOp(op);
    bool ok = TF_GetCode(status) == TF_OK && got == num_outputs;
    for (int i = 0; i < got; ++i) {
      if (handles[i] == nullptr) ok = false;
    }
    if (!ok) {
      for (int i = 0; i < got; ++i) {
        if (handles[i] != nullptr) TFE_DeleteTensorHandle(handles[i]);
      }
      return false;
    }
    for (int i = 0; i < num_outputs; ++i) {
      outputs[i] = EagerTensorFromHandle(handles[i], false);  // takes ownership
      if (outputs[i] == nullptr) {
        PyErr_Clear();
        for (int j = 0; j < i; ++j) Py_DECREF(outputs[j]);
        for (int j = i + 1; j < num_outputs; ++j) TFE_DeleteTensorHandle(handles[j]);
        return false;
      }
    }
    return true;
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

// ---------------------------------------------------------------------------------------
// The backward step recorded on the tape: called with the cotangents of the forward
// outputs, returns [gradient for x]. Eagerly, and with no tape recording the backward pass
// itself, it runs the gradient op here; otherwise (graph tensors inside tape.jacobian's
// pfor, nested tapes that differentiate the gradient, forward accumulators transposing
// it) it calls grad_fallback, the generated op wrapper, which records the gradient op with
// its registered gradient.

PyObject* Backward_call(PyObject* self_obj, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<BackwardObject*>(self_obj);
  const EagerOpObject* op = self->op;
  if (PyTuple_GET_SIZE(args) != op->num_outputs ||
      (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0)) {
    PyErr_SetString(PyExc_TypeError, "tfsort backward step: one cotangent per output");
    return nullptr;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(op->grad_inputs);
  PyObject* inputs = PyTuple_New(n);  // the gradient op's inputs, as Python objects
  if (inputs == nullptr) return nullptr;
  bool all_eager = true;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* spec = PyTuple_GET_ITEM(op->grad_inputs, i);
    PyObject* if_none = nullptr;
    if (PyTuple_CheckExact(spec)) {  // (code, tensor to use if the value is None)
      if_none = PyTuple_GET_ITEM(spec, 1);
      spec = PyTuple_GET_ITEM(spec, 0);
    }
    PyObject* value = spec;
    if (PyLong_CheckExact(spec)) {
      const long k = PyLong_AsLong(spec);
      if (k == kFromX) {
        value = self->x;
      } else if (k >= kFromCotangent) {
        value = PyTuple_GET_ITEM(args, k - kFromCotangent);
      } else {
        value = PyTuple_GET_ITEM(self->outputs, k);
      }
    }
    if (value == Py_None && if_none != nullptr) value = if_none;
    Py_INCREF(value);
    PyTuple_SET_ITEM(inputs, i, value);
    all_eager = all_eager && EagerTensor_CheckExact(value);
  }
  PyObject* grad = nullptr;
  if (all_eager && TapesEmpty()) {
    EagerScope scope;
    if (scope.Init(self->ctx)) {
      TFE_TensorHandle* handles[kMaxInputs];
      for (Py_ssize_t i = 0; i < n; ++i) {
        handles[i] = EagerTensor_Handle(PyTuple_GET_ITEM(inputs, i));
      }
      if (!scope.Run(*op->grad_type, handles, static_cast<int>(n), *op->grad_attrs, 1,
                     &grad)) {
        grad = nullptr;
      }
    }
  }
  if (grad == nullptr) {
    grad = PyObject_Call(op->grad_fallback, inputs,
                         PyDict_GET_SIZE(op->grad_kwargs) ? op->grad_kwargs : nullptr);
  }
  Py_DECREF(inputs);
  if (grad == nullptr) return nullptr;
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
  Py_XDECREF(self->x);
  Py_XDECREF(self->outputs);
  Py_XDECREF(self->ctx);
  PyObject_Free(self_obj);
}

// ---------------------------------------------------------------------------------------
// EagerOp(op_type, attrs, extra, grad_type, grad_inputs, grad_attrs, grad_fallback,
//         recording_attrs=None, max_stash_elements=2**62, num_outputs=1)

// Checks that `value` is a tuple of at most `max` eager tensors (or, with ints, of codes
// kFromX, 0 <= i < num_outputs or kFromCotangent + i, each alone or paired with the eager
// tensor to use when its value is None).
bool CheckInputs(PyObject* value, const char* name, Py_ssize_t max, int ints_for_outputs) {
  if (!PyTuple_CheckExact(value)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a tuple", name);
    return false;
  }
  if (PyTuple_GET_SIZE(value) > max) {
    PyErr_Format(PyExc_ValueError, "%s: at most %d inputs", name, static_cast<int>(max));
    return false;
  }
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); ++i) {
    PyObject* item = PyTuple_GET_ITEM(value, i);
    if (ints_for_outputs > 0 && PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 &&
        EagerTensor_CheckExact(PyTuple_GET_ITEM(item, 1))) {
      item = PyTuple_GET_ITEM(item, 0);  // (code, tensor to use if the value is None)
    }
    if (EagerTensor_CheckExact(item)) continue;
    if (ints_for_outputs > 0 && PyLong_CheckExact(item)) {
      const long k = PyLong_AsLong(item);
      if (k == kFromX || (k >= 0 && k < ints_for_outputs) ||
          (k >= kFromCotangent && k < kFromCotangent + ints_for_outputs)) {
        continue;
      }
      PyErr_Clear();
    }
    PyErr_Format(PyExc_TypeError, "%s: expected eager tensors%s", name,
                 ints_for_outputs > 0 ? " or input codes" : "");
    return false;
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
  PyObject *attrs, *extra, *grad_inputs, *grad_attrs, *grad_fallback;
  PyObject* recording_attrs = Py_None;
  long long max_stash = 1LL << 62;
  int num_outputs = 1;
  static const char* kwlist[] = {"op_type",       "attrs",           "extra",
                                 "grad_type",     "grad_inputs",     "grad_attrs",
                                 "grad_fallback", "recording_attrs", "max_stash_elements",
                                 "num_outputs",   nullptr};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sOOsOOO|OLi", const_cast<char**>(kwlist),
                                   &op_type, &attrs, &extra, &grad_type, &grad_inputs,
                                   &grad_attrs, &grad_fallback, &recording_attrs, &max_stash,
                                   &num_outputs)) {
    return -1;
  }
  if (num_outputs < 1 || num_outputs > kMaxOutputs) {
    PyErr_Format(PyExc_ValueError, "num_outputs: 1 to %d", kMaxOutputs);
    return -1;
  }
  if (!CheckInputs(extra, "extra", kMaxInputs - 1, 0) ||
      !CheckInputs(grad_inputs, "grad_inputs", kMaxInputs, num_outputs)) {
    return -1;
  }
  if (!PyCallable_Check(grad_fallback)) {
    PyErr_SetString(PyExc_TypeError, "grad_fallback: expected a callable");
    return -1;
  }
  if (recording_attrs == Py_None) recording_attrs = attrs;
  std::unique_ptr<Attrs> a(new Attrs), r(new Attrs), g(new Attrs);
  if (!ParseAttrs(attrs, a.get(), "attrs") ||
      !ParseAttrs(recording_attrs, r.get(), "recording_attrs") ||
      !ParseAttrs(grad_attrs, g.get(), "grad_attrs")) {
    return -1;
  }
  self->record_name = PyUnicode_FromString(op_type);
  if (self->record_name == nullptr) return -1;
  self->keeps_outputs = false;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(grad_inputs); ++i) {
    PyObject* item = PyTuple_GET_ITEM(grad_inputs, i);
    if (PyLong_CheckExact(item)) {
      const long k = PyLong_AsLong(item);
      self->keeps_outputs = self->keeps_outputs || (k >= 0 && k < kFromCotangent);
    }
  }
  self->op_type = new std::string(op_type);
  self->grad_type = new std::string(grad_type);
  self->attrs = a.release();
  self->recording_attrs = r.release();
  self->grad_attrs = g.release();
  self->max_stash = max_stash;
  self->num_outputs = num_outputs;
  Py_INCREF(extra);
  self->extra = extra;
  Py_INCREF(grad_inputs);
  self->grad_inputs = grad_inputs;
  self->grad_kwargs = PyDict_Copy(grad_attrs);
  if (self->grad_kwargs == nullptr) return -1;
  Py_INCREF(grad_fallback);
  self->grad_fallback = grad_fallback;
  return 0;
}

void EagerOp_dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<EagerOpObject*>(self_obj);
  delete self->op_type;
  delete self->grad_type;
  delete self->attrs;
  delete self->recording_attrs;
  delete self->grad_attrs;
  Py_XDECREF(self->extra);
  Py_XDECREF(self->grad_inputs);
  Py_XDECREF(self->grad_kwargs);
  Py_XDECREF(self->grad_fallback);
  Py_XDECREF(self->record_name);
  Py_TYPE(self_obj)->tp_free(self_obj);
}

// op(ctx, x): the first output of op_type(x, *extra) as an EagerTensor, all outputs
// recorded with one backward step when a tape or forward accumulator records; None where
// the caller must take the generic path. ctx is TF's eager context
// (tfsort._utils.eager_context()).
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
  TFE_TensorHandle* inputs[kMaxInputs];
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
  const Py_ssize_t num_extra = PyTuple_GET_SIZE(self->extra);
  for (Py_ssize_t i = 0; i < num_extra; ++i) {
    inputs[1 + i] = EagerTensor_Handle(PyTuple_GET_ITEM(self->extra, i));
  }
  PyObject* outs[kMaxOutputs];
  if (!scope.Run(*self->op_type, inputs, 1 + static_cast<int>(num_extra),
                 recording ? *self->recording_attrs : *self->attrs, self->num_outputs, outs)) {
    Py_RETURN_NONE;
  }
  const int m = self->num_outputs;
  PyObject* out = outs[0];
  if (!recording) {
    for (int i = 1; i < m; ++i) Py_DECREF(outs[i]);
    return out;
  }
  // outputs (a list for the tape) holds every output; `out` keeps its own reference.
  PyObject* outputs = PyList_New(m);
  PyObject* sources = PyList_New(1);
  auto* backward = PyObject_New(BackwardObject, &BackwardType);
  if (backward != nullptr) {
    Py_INCREF(self_obj);
    backward->op = self;
    Py_INCREF(x);
    backward->x = x;
    Py_INCREF(ctx);
    backward->ctx = ctx;
    backward->outputs = nullptr;
    if (self->keeps_outputs) {
      backward->outputs = PyTuple_New(m);
      if (backward->outputs != nullptr) {
        for (int i = 0; i < m; ++i) {
          Py_INCREF(outs[i]);
          PyTuple_SET_ITEM(backward->outputs, i, outs[i]);
        }
      }
    }
  }
  PyObject* recorded = nullptr;
  if (outputs != nullptr && sources != nullptr && backward != nullptr &&
      (!self->keeps_outputs || backward->outputs != nullptr)) {
    Py_INCREF(x);
    PyList_SET_ITEM(sources, 0, x);
    Py_INCREF(out);
    PyList_SET_ITEM(outputs, 0, out);
    for (int i = 1; i < m; ++i) {
      PyList_SET_ITEM(outputs, i, outs[i]);  // steals our reference
      outs[i] = nullptr;
    }
    // No forward function: forward accumulators transpose the backward step (it is linear
    // in the cotangents and its gradient op has a registered gradient), as for
    // tf.custom_gradient.
    recorded = TFE_Py_TapeSetRecordOperation(self->record_name, outputs, sources,
                                             reinterpret_cast<PyObject*>(backward), Py_None);
  }
  for (int i = 1; i < m; ++i) Py_XDECREF(outs[i]);
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
    "Eager fast path of tfsort's ops (see tfsort/pyext/eager_fast_path.cc).", -1, kMethods,
};

}  // namespace

PyMODINIT_FUNC PyInit__eager_fast_path() {
  EagerOpType.tp_name = "tfsort._eager_fast_path.EagerOp";
  EagerOpType.tp_basicsize = sizeof(EagerOpObject);
  EagerOpType.tp_flags = Py_TPFLAGS_DEFAULT;
  EagerOpType.tp_doc =
      "EagerOp(op_type, attrs, extra, grad_type, grad_inputs, grad_attrs, grad_fallback, "
      "recording_attrs=None, max_stash_elements=2**62, num_outputs=1): op(ctx, x) runs "
      "op_type(x, *extra) eagerly, records its outputs with a backward step that runs "
      "grad_type(*grad_inputs) and returns the first output; None where the generic path "
      "must run. grad_inputs: eager tensors, or -1 for x, i for output i, 100 + i for the "
      "cotangent of output i, each code alone or as (code, tensor used if it is None).";
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
  g_str_type_enum = PyUnicode_InternFromString("as_datatype_enum");
  if (!g_str_handle || !g_str_thread_local || !g_str_device_name || !g_str_op_callbacks ||
      !g_str_type_enum) {
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
