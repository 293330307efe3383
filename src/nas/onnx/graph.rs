//! A small builder of an ONNX inference graph: initializers taken from a network's
//! `state_dict` under their PyTorch names, nodes with unique output names, and one helper per
//! operator the exported networks use (Conv, BatchNormalization, Relu, the pools, Add, Sum,
//! Concat, Slice, GlobalAveragePool, Flatten, Gemm, Shape, ConstantOfShape). Each helper
//! writes the attributes that make ONNX compute what the nasrs forward computes (average
//! pooling without the padding in the divisor, eval-mode batch norm at `BN_EPS`), so the
//! network files (`darts.rs`, `nb201.rs`) read like the forwards they mirror.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto,
};
use crate::error::{Error, Result};
use crate::io::HostTensor;
use crate::nas::modules::BN_EPS;
use std::collections::{BTreeMap, BTreeSet};

/// A tensor flowing through the graph: the name of the value that holds it.
pub type Value = String;

/// A graph under construction over the tensors of one `state_dict`.
pub struct GraphBuilder<'a> {
    tensors: &'a BTreeMap<String, HostTensor>,
    /// The file the tensors came from, for error messages.
    source: &'a str,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Names already used by an initializer or a node output.
    used: BTreeSet<String>,
    /// The Relu node already made for a value.
    relus: BTreeMap<String, Value>,
    counter: usize,
}

impl<'a> GraphBuilder<'a> {
    pub fn new(tensors: &'a BTreeMap<String, HostTensor>, source: &'a str) -> Self {
        GraphBuilder {
            tensors,
            source,
            nodes: Vec::new(),
            initializers: Vec::new(),
            used: BTreeSet::new(),
            relus: BTreeMap::new(),
            counter: 0,
        }
    }

    /// The `state_dict` tensor `name` as an initializer of that name (added once).
    pub fn weight(&mut self, name: &str) -> Result<Value> {
        if self.used.contains(name) {
            return Ok(name.to_string());
        }
        let t = self.tensor(name)?;
        self.initializers.push(f32_tensor(name, &t.shape, &t.data));
        self.used.insert(name.to_string());
        Ok(name.to_string())
    }

    /// A constant initializer made here (BN's unit scale, Slice's bounds), named uniquely.
    fn constant(&mut self, stem: &str, tensor: impl FnOnce(&str) -> TensorProto) -> Value {
        let name = self.fresh(stem);
        self.initializers.push(tensor(&name));
        self.used.insert(name.clone());
        name
    }

    fn fresh(&mut self, stem: &str) -> String {
        let mut name = stem.to_string();
        while self.used.contains(&name) {
            self.counter += 1;
            name = format!("{stem}#{}", self.counter);
        }
        name
    }

    /// Adds a node of `op` over `inputs` whose one output is named after `out` (made unique).
    fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> Value {
        let output = self.fresh(out);
        self.used.insert(output.clone());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(output.clone()),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    /// `max(x, 0)`, one Relu node per value however many ops read it.
    pub fn relu_of(&mut self, x: &str) -> Value {
        if let Some(r) = self.relus.get(x) {
            return r.clone();
        }
        let r = self.node("Relu", &[x], &format!("{x}.relu"), vec![]);
        self.relus.insert(x.to_string(), r.clone());
        r
    }

    /// The `state_dict` tensor `name`, or an error naming it and the file.
    fn tensor(&self, name: &str) -> Result<&'a HostTensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::invalid(
                "--checkpoint",
                format!("{}: no tensor {name}, which the network needs", self.source),
            )
        })
    }

    /// The kernel size of the conv weight `name` (OIHW).
    pub fn kernel_of(&self, name: &str) -> Result<usize> {
        Ok(self.tensor(name)?.shape.get(2).copied().unwrap_or(1))
    }

    /// The output channels of the conv weight `name` (a depthwise conv's groups).
    pub fn out_channels_of(&self, name: &str) -> Result<usize> {
        Ok(self.tensor(name)?.shape.first().copied().unwrap_or(1))
    }

    /// A bias-free conv with the weight `{prefix}.weight` (OIHW; `groups` > 1 for depthwise).
    pub fn conv(&mut self, x: &str, prefix: &str, spec: ConvAttrs) -> Result<Value> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let k = self.kernel_of(&w)? as i64;
        let (p, s, d) = (
            spec.padding as i64,
            spec.stride as i64,
            spec.dilation as i64,
        );
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("pads", &[p, p, p, p]),
            ints("strides", &[s, s]),
            ints("dilations", &[d, d]),
            int("group", spec.groups as i64),
        ];
        Ok(self.node("Conv", &[x, &w], prefix, attrs))
    }

    /// Eval-mode batch norm of `{prefix}`: its running statistics, its affine weight and bias
    /// when it has them, else a unit scale and zero shift (what a non-affine BN computes).
    pub fn batch_norm(&mut self, x: &str, prefix: &str) -> Result<Value> {
        self.batch_norm_eps(x, prefix, BN_EPS)
    }

    /// [`GraphBuilder::batch_norm`] with the network's own epsilon (MBConv's 1e-3).
    pub fn batch_norm_eps(&mut self, x: &str, prefix: &str, eps: f64) -> Result<Value> {
        let mean = self.weight(&format!("{prefix}.running_mean"))?;
        let var = self.weight(&format!("{prefix}.running_var"))?;
        let c = self.tensor(&mean)?.shape.iter().product::<usize>();
        let (scale, bias) = if self.tensors.contains_key(&format!("{prefix}.weight")) {
            (
                self.weight(&format!("{prefix}.weight"))?,
                self.weight(&format!("{prefix}.bias"))?,
            )
        } else {
            (
                self.constant(&format!("{prefix}.unit_scale"), |n| {
                    f32_tensor(n, &[c], &vec![1.0; c])
                }),
                self.constant(&format!("{prefix}.zero_shift"), |n| {
                    f32_tensor(n, &[c], &vec![0.0; c])
                }),
            )
        };
        let attrs = vec![float("epsilon", eps as f32)];
        Ok(self.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            prefix,
            attrs,
        ))
    }

    /// `kernel` x `kernel` max or average pooling; padding is never counted in an average
    /// (`count_include_pad = 0`, as nasrs' `avg_pool2d` and DARTS' pools).
    pub fn pool(
        &mut self,
        x: &str,
        max: bool,
        kernel: usize,
        stride: usize,
        padding: usize,
        out: &str,
    ) -> Value {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        let mut attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[s, s]),
            ints("pads", &[p, p, p, p]),
        ];
        if !max {
            attrs.push(int("count_include_pad", 0));
        }
        let op = if max { "MaxPool" } else { "AveragePool" };
        self.node(op, &[x], out, attrs)
    }

    /// A conv with the weight `{prefix}.weight` and the bias `{prefix}.bias`.
    pub fn conv_with_bias(&mut self, x: &str, prefix: &str, spec: ConvAttrs) -> Result<Value> {
        let conv = self.conv(x, prefix, spec)?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        // The bias as the Conv node's third input.
        if let Some(node) = self
            .nodes
            .iter_mut()
            .rev()
            .find(|n| n.output == [conv.clone()])
        {
            node.input.push(b);
        }
        Ok(conv)
    }

    pub fn sigmoid(&mut self, x: &str, out: &str) -> Value {
        self.node("Sigmoid", &[x], out, vec![])
    }

    /// Swish (SiLU), `x * sigmoid(x)`: ONNX has no SiLU operator before opset 22.
    pub fn swish(&mut self, x: &str, out: &str) -> Value {
        let s = self.sigmoid(x, &format!("{out}.sigmoid"));
        self.mul(x, &s, out)
    }

    /// The element-wise product, broadcasting (a [N, C, 1, 1] gate over [N, C, H, W]).
    pub fn mul(&mut self, a: &str, b: &str, out: &str) -> Value {
        self.node("Mul", &[a, b], out, vec![])
    }

    /// Global average pooling, keeping [N, C, 1, 1].
    pub fn global_avg_pool(&mut self, x: &str, out: &str) -> Value {
        self.node("GlobalAveragePool", &[x], out, vec![])
    }

    pub fn add(&mut self, a: &str, b: &str, out: &str) -> Value {
        self.node("Add", &[a, b], out, vec![])
    }

    /// The element-wise sum of one or more values (one value is itself).
    pub fn sum(&mut self, terms: &[Value], out: &str) -> Value {
        match terms {
            [one] => one.clone(),
            [a, b] => self.add(a, b, out),
            _ => {
                let inputs: Vec<&str> = terms.iter().map(String::as_str).collect();
                self.node("Sum", &inputs, out, vec![])
            }
        }
    }

    /// Concatenation along channels (axis 1).
    pub fn concat(&mut self, parts: &[Value], out: &str) -> Value {
        match parts {
            [one] => one.clone(),
            _ => {
                let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.node("Concat", &inputs, out, vec![int("axis", 1)])
            }
        }
    }

    /// `x[:, :, 1:, 1:]` (FactorizedReduce's second path).
    pub fn shift_crop(&mut self, x: &str, out: &str) -> Value {
        let starts = self.constant("shift_crop.starts", |n| i64_tensor(n, &[1, 1]));
        let ends = self.constant("shift_crop.ends", |n| i64_tensor(n, &[i64::MAX, i64::MAX]));
        let axes = self.constant("shift_crop.axes", |n| i64_tensor(n, &[2, 3]));
        self.node("Slice", &[x, &starts, &ends, &axes], out, vec![])
    }

    /// A tensor of zeros with `x`'s shape (a node NB201's `none` edges leave empty).
    pub fn zeros_like(&mut self, x: &str, out: &str) -> Value {
        let shape = self.node("Shape", &[x], &format!("{out}.shape"), vec![]);
        let zero = AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(f32_tensor("zero", &[1], &[0.0])),
            ..Default::default()
        };
        self.node("ConstantOfShape", &[&shape], out, vec![zero])
    }

    /// Global average pooling, flattened to [N, C], then the linear layer `{prefix}`
    /// (`x W^T + b`).
    pub fn pool_and_classify(&mut self, x: &str, prefix: &str, out: &str) -> Result<Value> {
        let pooled = self.global_avg_pool(x, "global_pool");
        let flat = self.node("Flatten", &[&pooled], "flatten", vec![int("axis", 1)]);
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        Ok(self.node("Gemm", &[&flat, &w, &b], out, vec![int("transB", 1)]))
    }

    /// Parameters exported (the elements of every initializer taken from the `state_dict`).
    pub fn exported_elements(&self) -> usize {
        self.initializers
            .iter()
            .filter(|t| self.tensors.contains_key(t.name.as_deref().unwrap_or("")))
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum()
    }
}

/// A conv's geometry beside its weight.
#[derive(Clone, Copy)]
pub struct ConvAttrs {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvAttrs {
    pub fn plain(stride: usize, padding: usize) -> Self {
        ConvAttrs {
            stride,
            padding,
            dilation: 1,
            groups: 1,
        }
    }
}

fn f32_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![data.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}
