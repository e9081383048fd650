// mfn's guard in front of tritonserver's HTTP endpoint (njs, run by the proxy's nginx; see mfn/local/proxy_config.py).
//
// tritonserver 2.51 aborts on some request bodies: a shape whose element count does not fit in memory
// (std::bad_alloc), JSON nested tens of thousands of levels deep, a gzip body that expands without limit. It
// cannot be told to refuse them, so this refuses them before they reach it, with a 4xx that names the problem,
// and passes every other request on untouched. nginx itself bounds the body's size (client_max_body_size).

// Element counts past this are refused whatever the body: no tensor of a served model comes near it.
var MAX_ELEMENTS = Math.pow(2, 40);
var ITEM_BYTES = {BOOL: 1, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8, INT8: 1, INT16: 2, INT32: 4, INT64: 8,
                  FP16: 2, BF16: 2, FP32: 4, FP64: 8};

function refuse(r, status, message) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify({error: message + ' (refused by mfn\'s guard in front of tritonserver)'}) + '\n');
}

function elements(input) {
    var shape = input.shape;
    if (!Array.isArray(shape)) return 'input ' + JSON.stringify(input.name) + ' has no shape list';
    var count = 1;
    for (var i = 0; i < shape.length; i++) {
        var dim = shape[i];
        if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0) {
            return 'input ' + JSON.stringify(input.name) + ': shape ' + JSON.stringify(shape) +
                   ' must list whole numbers from 0 to 2^53 - 1';
        }
        count *= dim;
    }
    if (count > MAX_ELEMENTS) {
        return 'input ' + JSON.stringify(input.name) + ': shape ' + JSON.stringify(shape) + ' has ' + count +
               ' elements, more than any request may carry';
    }
    return count;
}

// What is wrong with one input, or '' when nothing is: its element count against the bytes that carry it.
function inputProblem(input, jsonBytes, binaryBytes) {
    if (input === null || typeof input !== 'object') return 'each entry of "inputs" must be an object';
    var count = elements(input);
    if (typeof count === 'string') return count;
    var parameters = input.parameters || {};
    if (parameters.shared_memory_region !== undefined) return '';
    var name = JSON.stringify(input.name);
    if (parameters.binary_data_size !== undefined) {
        var size = parameters.binary_data_size;
        if (!Number.isSafeInteger(size) || size < 0 || size > binaryBytes) {
            return 'input ' + name + ': binary_data_size ' + size + ' is not within the ' + binaryBytes +
                   ' bytes after the header';
        }
        var item = ITEM_BYTES[input.datatype];
        var needed = item === undefined ? count * 4 : count * item;  // BYTES: a 4-byte length per element
        if (item === undefined ? needed > size : needed !== size) {
            return 'input ' + name + ': shape ' + JSON.stringify(input.shape) + ' of ' + input.datatype + ' needs ' +
                   needed + ' bytes, but binary_data_size is ' + size;
        }
        return '';
    }
    if (count > jsonBytes) {
        return 'input ' + name + ': shape ' + JSON.stringify(input.shape) + ' has ' + count +
               ' elements, more than the ' + jsonBytes + '-byte body can hold';
    }
    return '';
}

function problem(r) {
    var encoding = r.headersIn['Content-Encoding'];
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
        return [415, 'Content-Encoding ' + JSON.stringify(encoding) + ': send the body uncompressed'];
    }
    var body = r.requestBuffer;
    if (body === undefined || body.length === 0) return null;
    var header = r.headersIn['Inference-Header-Content-Length'];
    var jsonBytes = body.length;
    if (header !== undefined) {
        jsonBytes = Number(header);
        if (!Number.isSafeInteger(jsonBytes) || jsonBytes < 0 || jsonBytes > body.length) {
            return [400, 'Inference-Header-Content-Length ' + JSON.stringify(header) + ' is not within the ' +
                         body.length + '-byte body'];
        }
    }
    var document;
    try {
        // njs parses natively and refuses nesting past 32 levels ("Nested too deep"): a request's nesting is its
        // tensors' rank + 3, while tritonserver's recursive parser overflows its stack near 40,000.
        document = JSON.parse(body.slice(0, jsonBytes).toString());
    } catch (error) {
        return [400, 'the body is not JSON tritonserver can take (' + error.message + ')'];
    }
    var inputs = document !== null && typeof document === 'object' ? document.inputs : undefined;
    if (inputs === undefined) return null;
    if (!Array.isArray(inputs)) return [400, '"inputs" must be a list'];
    for (var i = 0; i < inputs.length; i++) {
        var found = inputProblem(inputs[i], jsonBytes, body.length - jsonBytes);
        if (found) return [400, found];
    }
    return null;
}

function check(r) {
    var found = problem(r);
    if (found) {
        refuse(r, found[0], found[1]);
        return;
    }
    r.internalRedirect('@mfn_pass');
}

export default {check};
